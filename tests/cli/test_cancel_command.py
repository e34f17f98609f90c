"""`batchline cancel`: a job stops sending, keeps what its batches finished, and still accounts for every line."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from accounting_check import assert_every_line_accounted_for
from batchline.engines.tokenization import token_counter
from batchline.settings import load_settings
from lines import chat
from running_stack import FAST, PACE, Stack, running_stack, write

from batchline_local.emulator import billed_twice

pytestmark = pytest.mark.e2e

CANCELLED_MESSAGE = "cancelled by the user before it ran: the same file uploaded again sends it"


def shard_tokens(requests: int) -> int:
    body = json.loads(chat("x"))["body"]
    return requests * token_counter("o200k_base").prompt_tokens("/v1/chat/completions", body)


def wait_for(stack: Stack, job_id: str, ready, timeout: float = 30.0) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(AssertionError):  # not in the table yet: a moment after the upload
            view = stack.status(job_id)
            if ready(view):
                return view
        assert time.monotonic() < deadline, "the job never got there"
        time.sleep(0.3)


def test_cancel_keeps_what_the_batches_finished_and_accounts_for_every_line(tmp_path):
    # Three shards of four; the enqueued-token limit lets two run at once, so the third waits to be
    # sent. A batch runs its four requests over 12 s: one every 3 s.
    settings = load_settings(
        {
            **FAST,
            "emulator": {**PACE, "in_progress_seconds": 12},
            "batch_queue": {"default_tokens": shard_tokens(4) * 2},
        }
    )
    path = write(tmp_path / "slow.jsonl", [chat(f"s{i}") for i in range(12)])
    with running_stack(tmp_path, settings) as stack:
        job_id = stack.run("submit", str(path)).stdout.strip()
        running = wait_for(
            stack, job_id, lambda view: sum((shard["batch_completed"] or 0) > 0 for shard in view["shards"]) == 2
        )
        waiting = [shard["shard_id"] for shard in running["shards"] if not shard["batch_id"]]
        assert len(waiting) == 1

        early = stack.run("results", job_id, "--out", str(tmp_path / "early"), code=1)
        assert "has not finished yet" in early.stderr and f"batchline status {job_id} --watch" in early.stderr

        cancelled = stack.run("cancel", job_id)
        assert "2 batches cancelled" in cancelled.stderr and "1 shard will not be sent" in cancelled.stderr
        assert "the execution goes on" in cancelled.stderr

        view = stack.status(job_id, "--watch", "--interval", "0.3")
        stack.run("results", job_id, "--out", str(tmp_path / "out"), code=1)  # 1: lines without a result
        batches = stack.server.emulator.list_batches(limit=100)["data"]
        ledger = stack.server.emulator.ledger()
        again = stack.run("cancel", job_id, code=1)

        resubmitted = stack.run("submit", str(path)).stdout.strip()
        wait_for(stack, job_id, lambda view: not view["finished"])  # the upload reopened it
        final = stack.status(resubmitted, "--watch", "--interval", "0.3")
        stack.run("results", job_id, "--out", str(tmp_path / "resumed"))
        ledger_after = stack.server.emulator.ledger()

    assert view["finished"] and view["status"] == "cancelled" and view["cancel_requested"]
    assert sorted(batch["status"] for batch in batches) == ["cancelled", "cancelled"]  # the third never sent
    results, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    assert billed_twice(ledger) == {} and len(ledger) == len(results) >= 2  # what finished was kept
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "cancelled"
    assert summary["message"].startswith(f"cancelled by the user: {len(results)} of 12 requests succeeded")
    # the requests the cancelled batches did not run and the shard never sent, alike
    assert len(errors) == 12 - len(results) and {error["stage"] for error in errors} == {"provider"}
    assert {(error["code"], error["message"]) for error in errors} == {("cancelled", CANCELLED_MESSAGE)}
    assert "has already ended (cancelled)" in again.stderr

    # The same file again: exactly what has no result yet is sent, and nothing is paid twice.
    assert resubmitted == job_id and final["status"] == "succeeded"
    resumed, resumed_errors = assert_every_line_accounted_for(path, tmp_path / "resumed")
    assert len(resumed) == 12 and resumed_errors == []
    assert billed_twice(ledger_after) == {} and len(ledger_after) == 12


def test_a_cancelled_realtime_job_submitted_again_sends_only_what_has_no_answer(tmp_path):
    # 30 requests at 60 a minute: one a second, so the cancel lands half way.
    settings = load_settings(
        {
            **FAST,
            "emulator": {**PACE, "requests_per_minute": 60, "realtime_latency_seconds": 0.2},
            "realtime": {"default_limit": {"requests_per_minute": 60, "tokens_per_minute": 1_000_000}},
        }
    )
    path = write(tmp_path / "hot.jsonl", [chat(f"h{i}") for i in range(30)])
    with running_stack(tmp_path, settings) as stack:
        job_id = stack.run("submit", str(path), "--mode", "realtime").stdout.strip()
        wait_for(stack, job_id, lambda view: view["done"] >= 5)
        stack.run("cancel", job_id)
        first = stack.status(job_id, "--watch", "--interval", "0.3")
        stack.run("results", job_id, "--out", str(tmp_path / "out"), code=1)
        billed_at_cancel = len(stack.server.emulator.ledger())

        stack.run("submit", str(path), "--mode", "realtime")
        wait_for(stack, job_id, lambda view: not view["finished"])
        final = stack.status(job_id, "--watch", "--interval", "0.3")
        stack.run("results", job_id, "--out", str(tmp_path / "resumed"))
        ledger = stack.server.emulator.ledger()

    assert first["status"] == "cancelled" and billed_at_cancel < 30
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["message"].startswith("cancelled by the user")
    cancelled_results, _ = assert_every_line_accounted_for(path, tmp_path / "out")
    assert final["status"] == "succeeded"
    resumed, errors = assert_every_line_accounted_for(path, tmp_path / "resumed")
    assert len(resumed) == 30 and errors == [] and len(cancelled_results) <= billed_at_cancel
    assert billed_twice(ledger) == {} and len(ledger) == 30
