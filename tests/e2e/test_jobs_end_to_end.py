"""Whole jobs, batch and realtime: the real ASL executed by moto's interpreter, against the OpenAI emulator.

The upload to the input bucket starts each job through the object-created trigger, as deployed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from accounting_check import assert_every_line_accounted_for
from batchline.settings import load_settings
from lines import BAD_LINES, chat, embedding, response
from rich.console import Console

from batchline_local.emulator import EmulatorServer, OpenAIEmulator
from batchline_local.local_run import print_summary, run_local_job

pytestmark = pytest.mark.e2e

FAST = {
    "local_poll_seconds": 1,
    "cache": False,  # these files repeat request bodies on purpose: every line is sent (the cache has its own tests)
    "emulator": {"validating_seconds": 0, "in_progress_seconds": 0.2, "finalizing_seconds": 0},
}


def write_input(tmp_path: Path, lines: list[str], name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_mixed_file_with_every_kind_of_bad_line_accounts_for_each_line_once(tmp_path):
    good = []
    for i in range(30):
        good += [chat(f"chat-{i}"), embedding(f"emb-{i}"), response(f"resp-{i}"), chat(f"big-{i}", model="gpt-4o")]
    lines = good[:50] + [raw for raw, _ in BAD_LINES] + ["", "   "] + good[50:] + [chat("chat-3")]  # last: duplicate
    path = write_input(tmp_path, lines)
    settings = load_settings({**FAST, "shard_max_requests": 12})

    result = run_local_job(path, tmp_path / "out", settings)

    assert result.execution_status == "SUCCEEDED"
    results, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    assert len(results) == 120
    assert sorted(e["code"] for e in errors) == sorted([code for _, code in BAD_LINES] + ["duplicate_custom_id"])
    assert all(e["stage"] == "validation" for e in errors)
    assert {r["response"]["object"] for r in results} == {"chat.completion", "list", "response"}
    summary = result.summary
    assert summary["status"] == "completed_with_errors"
    assert summary["shards"] >= 4 + 120 // 12 - 4  # four (endpoint, model) groups, cut at 12 requests
    assert summary["input_tokens"] == sum(
        r["usage"].get("prompt_tokens", r["usage"].get("input_tokens", 0)) for r in results
    )
    assert summary["cost_usd"] == pytest.approx(summary["cost_usd_if_realtime"] / 2, rel=1e-6)
    # What the run itself cost in AWS, counted by every invocation: Plan, SubmitShards, a CheckShards
    # per poll of the whole job and Finalize. The state transitions follow the polls, not the shards:
    # Plan and ChooseRoute, SubmitShards and a wait, three per poll but the last (no wait after it),
    # then Finalize, DidJobFail and JobDone.
    aws = summary["aws"]
    polls = aws["usage"]["lambda_requests"] - 3
    assert polls >= 1
    assert aws["usage"]["state_transitions"] == 2 + 2 + 3 * polls - 1 + 3
    assert aws["usage"]["s3_write_requests"] > 0 and aws["usage"]["dynamodb_write_units"] > 0
    assert aws["cost_usd"] == pytest.approx(sum(aws["by_service_usd"].values()), abs=1e-7)
    assert aws["share_of_llm_cost"] == pytest.approx(aws["cost_usd"] / summary["cost_usd"], rel=1e-3)
    # The page a person opens: copied beside the three outputs, about this job, with its four charts.
    report = (tmp_path / "out" / "report.html").read_text()
    assert summary["outputs"]["report"].endswith(f"/{summary['job_id']}/report.html")
    assert f'data-field="job_id">{summary["job_id"]}<' in report and report.count('<svg id="chart-') == 4
    # A local run's outputs are the files in --out, in the report and in what it prints: no s3:// to nowhere.
    out = (tmp_path / "out").resolve()
    listed = re.search(r'<section class="panel" id="outputs">.*?</section>', report, flags=re.S).group(0)
    assert "s3://" not in listed
    for name in ("results.jsonl", "errors.jsonl", "summary.json", "report.html"):
        assert f'<a href="{name}"><code>{out / name}</code></a>' in listed
    printed = Console(record=True, width=300)
    print_summary(result, printed)
    text = printed.export_text()
    assert str(out / "results.jsonl") in text and str(out / "report.html") in text and "s3://" not in text


def test_a_file_with_no_valid_line_ends_failed_and_says_so(tmp_path):
    path = write_input(tmp_path, [raw for raw, _ in BAD_LINES[:3]])
    result = run_local_job(path, tmp_path / "out", load_settings(FAST))
    assert result.execution_status == "FAILED"
    assert result.summary["status"] == "failed"
    assert "no valid request" in result.summary["message"]
    _, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    assert [e["line"] for e in errors] == [1, 2, 3]


def test_a_shard_the_provider_refuses_becomes_errors_and_the_other_shards_still_succeed(tmp_path):
    # The emulator takes at most 5 requests per file: the 7-request shard is refused at upload.
    settings = load_settings({**FAST, "shard_max_requests": 7})
    lines = [chat(f"c{i}") for i in range(7)] + [embedding(f"e{i}") for i in range(4)]
    path = write_input(tmp_path, lines)
    emulator = OpenAIEmulator(settings, max_requests_per_file=5)
    with EmulatorServer(emulator=emulator) as server:
        result = run_local_job(path, tmp_path / "out", settings, openai=(server.base_url, "test-key"))
    assert result.execution_status == "SUCCEEDED"
    results, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    assert [r["custom_id"] for r in results] == [f"e{i}" for i in range(4)]
    assert {e["code"] for e in errors} == {"shard_not_completed"}
    assert all("ProviderError" in e["message"] for e in errors)
    assert result.summary["status"] == "completed_with_errors"


def test_a_request_the_provider_refuses_inside_a_batch_is_reported_with_the_providers_message(tmp_path):
    # Passes our checks (a parameter our table does not know is passed on) but the endpoint
    # answers 400: it lands in the batch's error file, and from there in errors.jsonl with the
    # provider's own words.
    refused = json.dumps(
        {
            "custom_id": "streamed",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "gpt-4o-mini", "input": "hello", "stream": True},
        }
    )
    path = write_input(tmp_path, [response("fine"), refused, response("also-fine")])
    result = run_local_job(path, tmp_path / "out", load_settings(FAST))
    results, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    assert [r["custom_id"] for r in results] == ["fine", "also-fine"]
    assert [(e["line"], e["stage"], e["status_code"]) for e in errors] == [(2, "provider", 400)]
    assert "Streaming" in errors[0]["message"]
    assert result.summary["failed"] == 1 and result.summary["status"] == "completed_with_errors"


def test_openai_base_url_sends_the_job_to_that_server_instead_of_a_built_in_emulator(tmp_path, monkeypatch):
    settings = load_settings(FAST)
    path = write_input(tmp_path, [chat("c0"), embedding("e0")])
    with EmulatorServer(settings=settings) as elsewhere:
        monkeypatch.setenv("OPENAI_BASE_URL", elsewhere.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "key-for-elsewhere")
        result = run_local_job(path, tmp_path / "out", settings)
        billed = sorted(entry["custom_id"] for entry in elsewhere.emulator.ledger())
    assert result.execution_status == "SUCCEEDED"
    assert billed == ["c0", "e0"]


def mixed_lines() -> list[str]:
    lines = []
    for i in range(8):
        lines += [chat(f"chat-{i}"), embedding(f"emb-{i}"), response(f"resp-{i}"), chat(f"big-{i}", model="gpt-4o")]
    return lines[:10] + [raw for raw, _ in BAD_LINES] + [""] + lines[10:] + [chat("chat-1")]  # last: duplicate


@pytest.mark.parametrize("mode", ["realtime", "auto"])
def test_realtime_and_auto_modes_account_for_every_line_of_a_mixed_file(tmp_path, mode):
    path = write_input(tmp_path, mixed_lines())
    settings = load_settings({**FAST, "auto_realtime_max_requests": 100, "shard_max_requests": 5})
    with EmulatorServer(settings=settings) as server:
        result = run_local_job(path, tmp_path / "out", settings, openai=(server.base_url, "k"), mode=mode)
        billed = [entry["custom_id"] for entry in server.emulator.ledger()]
    assert result.execution_status == "SUCCEEDED"
    results, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    assert len(results) == 32 and {r["route"] for r in results} == {"realtime"}
    assert sorted(billed) == sorted(r["custom_id"] for r in results)  # each billed once
    assert sorted(e["code"] for e in errors) == sorted([code for _, code in BAD_LINES] + ["duplicate_custom_id"])
    assert result.summary["route"] == "realtime"
    assert result.summary["cost_usd"] > 0
    assert result.summary["cost_usd"] == pytest.approx(result.summary["cost_usd_if_realtime"])
    assert result.summary["input_tokens"] == sum(
        r["usage"].get("prompt_tokens", r["usage"].get("input_tokens", 0)) for r in results
    )


def test_auto_mode_sends_a_job_above_the_threshold_to_the_batch_api(tmp_path):
    path = write_input(tmp_path, [chat(f"c{i}") for i in range(6)])
    settings = load_settings({**FAST, "auto_realtime_max_requests": 5})
    result = run_local_job(path, tmp_path / "out", settings, mode="auto")
    results, _ = assert_every_line_accounted_for(path, tmp_path / "out")
    assert {r["route"] for r in results} == {"batch"} and result.summary["route"] == "batch"


def test_a_realtime_run_against_another_server_learns_its_limits_and_stays_under_them(tmp_path, monkeypatch):
    # The server refills 12,000 TPM continuously (200 tokens a second, a bucket of one second) and says so
    # only in its headers; batchline starts from its own guess (200,000 TPM) and must learn the truth.
    server_settings = load_settings({"emulator": {"requests_per_minute": 1000, "tokens_per_minute": 12_000}})
    settings = load_settings(FAST)
    path = write_input(tmp_path, [chat(f"c{i}", f"feedback {i}: it broke after a week") for i in range(40)])
    with EmulatorServer(settings=server_settings) as elsewhere:
        monkeypatch.setenv("OPENAI_BASE_URL", elsewhere.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "key-for-elsewhere")
        result = run_local_job(path, tmp_path / "out", settings, mode="realtime")
        stats = elsewhere.emulator.stats()["models"]["gpt-4o-mini"]
    assert result.execution_status == "SUCCEEDED" and result.summary["succeeded"] == 40
    assert stats["requests_429"] == 0
    seconds = stats["last_admitted_at"] - stats["first_admitted_at"]
    # Never above the limit: what was sent fits in one bucket plus the refill over the time it took.
    assert stats["tokens_charged"] <= 200 + 200 * seconds
    assert seconds >= 3  # the limit really bound: 40 requests of ~40 tokens take several seconds
