"""`batchline estimate --sample N`: real output lengths from the realtime path replace the max_tokens assumption.

These start the OpenAI emulator (the built-in one, or one named by OPENAI_BASE_URL), so they live
outside the unit tier, whose network is off.
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

from batchline_local.cli import app
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


def test_a_sample_measured_on_the_built_in_emulator_replaces_the_assumed_output(tmp_path):
    path = write(tmp_path, chats=40, embeddings=10)

    estimated = estimate(str(path), "--sample", "8")

    sample = estimated["sample"]
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
    assert estimated["sample"]["cost_usd_realtime"] > 0


def test_the_same_seed_sends_the_same_requests(tmp_path, served):
    path = write(tmp_path, chats=60)

    first = estimate(str(path), "--sample", "5", "--seed", "7")["sample"]["lines"]
    again = estimate(str(path), "--sample", "5", "--seed", "7")["sample"]["lines"]
    other = estimate(str(path), "--sample", "5", "--seed", "8")["sample"]["lines"]

    assert first == again != other
    sent = [row["custom_id"] for row in served.emulator.ledger()]
    assert sorted(sent[:5]) == sorted(f"c-{line - 1}" for line in first)


def test_the_table_says_the_output_was_extrapolated_from_the_sample(tmp_path):
    path = write(tmp_path, chats=20)

    result = CliRunner().invoke(app, ["estimate", str(path), "--sample", "4"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "output tokens: extrapolated from 4 sampled requests" in result.stdout
    assert "sample: 4 requests sent realtime" in result.stdout


def test_a_sample_that_no_one_answers_fails_with_what_to_check(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "insufficient_quota")
    path = write(tmp_path, chats=5)

    result = CliRunner().invoke(app, ["estimate", str(path), "--sample", "3"])

    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "none of the 3 sampled requests was answered" in said and "HTTP 429" in said
    assert "OPENAI_BASE_URL" in said
