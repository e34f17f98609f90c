"""The answer cache on moto and the emulator: Plan -> poll loop -> Finalize, a changed file rerun, and --no-cache."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from batch_route import batch_route_stack
from batchline import wiring
from batchline.adapters.answer_cache import DynamoAnswerCache
from batchline.domain.answer_cache import request_hash
from batchline.handlers import check, finalize, plan, submit
from batchline.settings import load_settings
from lines import BAD_LINES, chat

from batchline_local.moto_patches import LocalLambdaContext

SETTINGS = load_settings(
    {"shard_max_requests": 4, "emulator": {"validating_seconds": 0, "in_progress_seconds": 0, "finalizing_seconds": 0}}
)
CONTEXT = LocalLambdaContext("test", 1024, "arn:aws:lambda:us-east-1:123456789012:function:test", "req-1")


@pytest.fixture
def aws(monkeypatch) -> Iterator[dict]:
    with batch_route_stack(monkeypatch, SETTINGS) as stack:
        yield stack


def run_job(s3, lines: list[str], *, key: str = "feedback.jsonl", metadata: dict | None = None) -> dict:
    """Upload, Plan, the poll loop, Finalize, as the state machine chains them; the summary and the outputs."""
    s3.put_object(Bucket="input-files", Key=key, Body=("\n".join(lines) + "\n").encode(), Metadata=metadata or {})
    event = {"bucket": "input-files", "key": key, "poll_seconds": 1}
    planned = plan.handler(event, CONTEXT)
    job_id = planned["job_id"]
    if planned["shard_count"]:
        answer = submit.handler({"job_id": job_id, "poll_seconds": 1}, CONTEXT)
        while not answer["finished"]:
            answer = check.handler({"job_id": job_id, "poll_seconds": 1, "polls": answer["polls"]}, CONTEXT)
    finalize.handler({**event, "plan": planned}, CONTEXT)

    def jsonl(name: str) -> list[dict]:
        body = s3.get_object(Bucket="output-files", Key=f"jobs/{job_id}/{name}")["Body"].read()
        return [json.loads(x) for x in body.splitlines()]

    summary = json.loads(s3.get_object(Bucket="output-files", Key=f"jobs/{job_id}/summary.json")["Body"].read())
    return {"planned": planned, "summary": summary, "results": jsonl("results.jsonl"), "errors": jsonl("errors.jsonl")}


def billed(emulator) -> list[str]:
    return [entry["custom_id"] for entry in emulator.emulator.ledger()]


def answer_of(record: dict) -> object:
    return record["response"]["choices"][0]["message"]["content"]


def test_a_changed_file_sends_only_its_changed_lines_and_the_rest_come_from_the_cache(aws):
    lines = [chat(f"r{i}", f"Classify review {i}: the parcel came late.") for i in range(12)]
    first = run_job(aws["s3"], lines)
    assert len(billed(aws["emulator"])) == 12
    assert first["summary"]["cache_kept"] == 12 and first["summary"]["cached"] == 0

    changed = list(lines)
    changed[2] = chat("r2", "Classify review 2: it never came.")
    changed[7] = chat("r7", "Classify review 7: it came broken.")
    second = run_job(aws["s3"], changed)

    assert sorted(billed(aws["emulator"])[12:]) == ["r2", "r7"], "only the changed lines are sent"
    summary = second["summary"]
    assert (summary["cached"], summary["duplicates"], summary["succeeded"]) == (10, 0, 12)
    assert summary.get("unaccounted_lines", 0) == 0
    assert [r["line"] for r in second["results"]] == list(range(1, 13)), "in line order, each line once"
    routes = [r["route"] for r in second["results"]]
    assert routes.count("cache") == 10 and routes[2] == "batch" and routes[7] == "batch"
    unchanged = [i for i in range(12) if i not in (2, 7)]
    assert [answer_of(second["results"][i]) for i in unchanged] == [answer_of(first["results"][i]) for i in unchanged]
    assert [second["results"][i]["custom_id"] for i in range(12)] == [f"r{i}" for i in range(12)]
    assert summary["cache_saved_usd"] > 0 and summary["cost_usd"] < first["summary"]["cost_usd"]
    assert second["planned"]["valid"] == 2 and second["planned"]["shard_count"] == 1


def test_duplicates_in_one_file_are_sent_once_and_each_gets_its_own_line_and_id(aws):
    lines = [chat("a", "same question"), chat("b", "other"), chat("c", "same question"), BAD_LINES[1][0]]
    lines.append(chat("d", "same question"))
    job = run_job(aws["s3"], lines)

    assert sorted(billed(aws["emulator"])) == ["a", "b"]
    summary = job["summary"]
    assert (summary["duplicates"], summary["succeeded"], summary["invalid"]) == (2, 4, 1)
    assert summary.get("unaccounted_lines", 0) == 0
    results = job["results"]
    assert [(r["line"], r["custom_id"]) for r in results] == [(1, "a"), (2, "b"), (3, "c"), (5, "d")]
    assert results[2]["duplicate_of"] == 1 and results[2]["route"] == "cache"
    assert answer_of(results[2]) == answer_of(results[0]) == answer_of(results[3])


def test_a_file_answered_entirely_from_the_cache_sends_nothing_and_holds_no_budget(aws):
    lines = [chat(f"r{i}", f"q{i}") for i in range(5)]
    run_job(aws["s3"], lines)
    again = run_job(aws["s3"], [*lines, chat("r0-again", "q0")], key="feedback-copy.jsonl")
    assert len(billed(aws["emulator"])) == 5
    assert again["planned"]["shard_count"] == 0 and again["planned"]["valid"] == 0
    assert (again["summary"]["cached"], again["summary"]["duplicates"], again["summary"]["succeeded"]) == (5, 1, 6)
    assert again["summary"]["cost_usd"] == 0 and again["summary"]["status"] == "succeeded"
    job = wiring.job_store().get_job(again["planned"]["job_id"])
    assert job is not None and job.hold_nano == 0 and job.cached == 5


def test_no_cache_metadata_sends_everything_and_keeps_nothing(aws):
    lines = [chat("a", "same"), chat("b", "same")]
    job = run_job(aws["s3"], lines, metadata={"batchline-cache": "off"})
    assert sorted(billed(aws["emulator"])) == ["a", "b"]
    assert (job["summary"]["cached"], job["summary"]["duplicates"], job["summary"]["cache_kept"]) == (0, 0, 0)
    cache = DynamoAnswerCache("jobs")
    assert cache.known([request_hash(lines[0].encode())]) == {}


def test_the_cache_reads_a_hundred_keys_a_call_and_finds_each_kept_answer(aws):
    cache = DynamoAnswerCache("jobs")
    keys = [f"{i:064x}" for i in range(250)]
    assert cache.keep((key, f"answer {key}".encode()) for key in keys[::2]) == 125
    found = cache.known(keys)
    assert sorted(found) == sorted(keys[::2]) and found[keys[4]] == f"answer {keys[4]}".encode()
