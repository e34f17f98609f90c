"""`batchline estimate --sample N`: real output lengths from the realtime path replace the max_tokens assumption.

These start the OpenAI emulator (the built-in one with --sample-emulator, or one named by
OPENAI_BASE_URL), so they live outside the unit tier, whose network is off. Without either, a
sample is refused: the emulator's answers would pass for the model's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchline.settings import load_settings
from lines import chat, embedding
from typer.testing import CliRunner

from batchline_cli.cli import app
from batchline_cli.estimate import OPENAI_API_URL, SampleEndpoint
from batchline_local.emulator import EmulatorServer
from batchline_local.emulator.faults import FAULTS_ENV

CAP = 30  # max_tokens of every chat line; the emulator answers 1 to 40 tokens, cut at the cap


@pytest.fixture(autouse=True)
def _built_in_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither a shell's OpenAI endpoint nor its emulator faults may leak into these tests."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", FAULTS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """An emulator the test can read the ledger of, named to the command by OPENAI_BASE_URL."""
    with EmulatorServer(settings=load_settings()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield server


def write(tmp_path: Path, chats: int, embeddings: int = 0) -> Path:
    lines = [chat(f"c-{i}", f"Classify review number {i}: it came late.", max_tokens=CAP) for i in range(chats)]
    lines += [embedding(f"e-{i}") for i in range(embeddings)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def estimate(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_sample_without_a_real_endpoint_is_refused_and_says_what_to_set(tmp_path):
    path = write(tmp_path, chats=5)

    result = CliRunner().invoke(app, ["estimate", str(path), "--sample", "3"])

    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--sample measures real output lengths, so it needs a real endpoint" in said
    assert "set OPENAI_API_KEY (and OPENAI_BASE_URL for a server other than OpenAI's)" in said
    assert "--sample-emulator" in said


def test_a_base_url_without_a_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    path = write(tmp_path, chats=5)

    result = CliRunner().invoke(app, ["estimate", str(path), "--sample", "3"])

    assert result.exit_code == 2
    assert "OPENAI_BASE_URL is set but OPENAI_API_KEY is not" in " ".join(result.output.split())


def test_a_key_alone_samples_openai_itself_and_the_flag_alone_the_emulator():
    assert SampleEndpoint.from_environment({"OPENAI_API_KEY": "sk-x"}, emulator=False) == SampleEndpoint(
        OPENAI_API_URL, "sk-x"
    )
    named = {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}
    assert SampleEndpoint.from_environment(named, emulator=False).base_url == "http://127.0.0.1:8000/v1"
    assert SampleEndpoint.from_environment({}, emulator=True).emulator


def test_sample_emulator_without_sample_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["estimate", str(write(tmp_path, chats=2)), "--sample-emulator"])

    assert result.exit_code == 2
    assert "--sample-emulator goes with --sample N" in result.output


def test_a_sample_measured_on_the_built_in_emulator_replaces_the_assumed_output(tmp_path):
    path = write(tmp_path, chats=40, embeddings=10)

    estimated = estimate(str(path), "--sample", "8", "--sample-emulator")

    sample = estimated["sample"]
    assert sample["emulator"] is True
    assert estimated["output_tokens_source"] == "sample"
    assert (sample["requested"], sample["sent"], sample["measured"], sample["failed"]) == (8, 8, 8, [])
    assert sample["output_tokens_assumed"] == 8 * CAP
    assert estimated["output_tokens_assumed"] == 40 * CAP
    # The ratio of real to assumed output in the sample, applied to the whole file's assumption.
    assert estimated["output_tokens"] == round(40 * CAP * sample["output_tokens"] / sample["output_tokens_assumed"])
    assert estimated["output_tokens"] < estimated["output_tokens_assumed"]
    chat_group, embeddings_group = estimated["groups"]
    assert (chat_group["output_tokens_source"], chat_group["sampled"]) == ("sample", 8)
    assert (embeddings_group["output_tokens_source"], embeddings_group["output_tokens"]) == ("max_tokens", 0)


def test_when_every_request_is_sampled_the_output_is_exactly_what_the_endpoint_billed(tmp_path, served):
    path = write(tmp_path, chats=12)

    estimated = estimate(str(path), "--sample", "50")

    billed = served.emulator.ledger()
    assert sorted(row["custom_id"] for row in billed) == sorted(f"c-{i}" for i in range(12))
    assert estimated["output_tokens"] == sum(row["completion_tokens"] for row in billed)
    assert estimated["sample"]["base_url"] == served.base_url
    assert estimated["sample"]["emulator"] is False
    assert estimated["sample"]["cost_usd_realtime"] > 0


def test_the_same_seed_sends_the_same_requests(tmp_path, served):
    path = write(tmp_path, chats=60)

    first = estimate(str(path), "--sample", "5", "--seed", "7")["sample"]["lines"]
    again = estimate(str(path), "--sample", "5", "--seed", "7")["sample"]["lines"]
    other = estimate(str(path), "--sample", "5", "--seed", "8")["sample"]["lines"]

    assert first == again != other
    sent = [row["custom_id"] for row in served.emulator.ledger()]
    assert sorted(sent[:5]) == sorted(f"c-{line - 1}" for line in first)


def test_the_table_says_the_output_was_extrapolated_from_the_sample(tmp_path, served):
    path = write(tmp_path, chats=20)

    result = CliRunner().invoke(app, ["estimate", str(path), "--sample", "4"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "output tokens: extrapolated from 4 sampled requests (4 chat/completions" in result.stdout
    assert f"sample: 4 requests sent realtime to {served.base_url}, 4 answered, 0 failed; it cost $" in result.stdout
    assert "emulator" not in result.stdout


def test_the_table_says_plainly_when_the_figures_come_from_the_emulator(tmp_path):
    path = write(tmp_path, chats=20)

    result = CliRunner().invoke(
        app, ["estimate", str(path), "--sample", "4", "--sample-emulator"], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 0, result.output
    said = result.stdout
    assert "extrapolated from 4 sampled requests answered by the built-in emulator, not the model (4 chat" in said
    assert "sample: 4 requests sent realtime to the built-in emulator (http://127.0.0.1:" in said
    assert "the emulator charges nothing" in said
    assert "the sampled output lengths are the emulator's synthetic answers, not the model's" in said


def test_a_sample_that_no_one_answers_fails_with_what_to_check(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "insufficient_quota")
    path = write(tmp_path, chats=5)

    result = CliRunner().invoke(app, ["estimate", str(path), "--sample", "3", "--sample-emulator"])

    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "none of the 3 sampled requests was answered" in said and "HTTP 429" in said
    assert "check BATCHLINE_EMULATOR_FAULTS" in said


def test_a_real_endpoint_that_answers_nothing_names_the_variables_to_check(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "insufficient_quota")
    with EmulatorServer(settings=load_settings()) as refusing:
        monkeypatch.setenv("OPENAI_BASE_URL", refusing.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        result = CliRunner().invoke(app, ["estimate", str(write(tmp_path, chats=5)), "--sample", "3"])

    assert result.exit_code == 1
    assert "check OPENAI_BASE_URL and OPENAI_API_KEY" in " ".join(result.output.split())
