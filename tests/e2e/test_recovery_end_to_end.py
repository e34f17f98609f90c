"""Never lose a request, never overspend: faults, crashes, resumption and budgets, end to end.

Each test runs the real ASL in moto against the emulator, injects a failure the way OpenAI or
Lambda produce it, and checks the invariant users rely on: every non-blank input line exactly
once in results or errors, and no custom_id billed twice by the provider (its ledger says).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounting_check import assert_every_line_accounted_for
from batchline.domain.layout import JobLayout
from batchline.settings import Settings, load_settings
from lines import chat

from batchline_local.emulator import EmulatorServer, Faults, billed_twice
from batchline_local.local_run import quiet_service_logs
from batchline_local.local_stack import LocalAws

pytestmark = pytest.mark.e2e

FAST = {
    "local_poll_seconds": 1,
    "cache": False,  # these files repeat request bodies on purpose: every line is sent (the cache has its own tests)
    "shard_max_requests": 4,
    "emulator": {"validating_seconds": 0, "in_progress_seconds": 0.2, "finalizing_seconds": 0},
}


class Stack:
    """One local stack and emulator that outlive a job, so that the same file can be uploaded again."""

    def __init__(self, aws: LocalAws, server: EmulatorServer, tmp_path: Path) -> None:
        self.aws = aws
        self.server = server
        self.tmp_path = tmp_path
        self.runs = 0

    def run(self, path: Path, *, budget_usd: float | None = None, mode: str | None = None) -> tuple[str, dict, Path]:
        """Upload (again) and wait for the execution it starts: (status, summary, outputs dir)."""
        before = len(self.aws.executions())
        job_id = self.aws.upload_input(str(path), path.name, mode=mode, budget_usd=budget_usd)
        deadline = time.monotonic() + 120
        while len(executions := self.aws.executions()) <= before:
            assert time.monotonic() < deadline, "the upload started no execution"
            time.sleep(0.05)
        arn = next(e["executionArn"] for e in executions if e["executionArn"] not in self._seen(executions, before))
        while (status := self.aws.job_execution(arn)["status"]) == "RUNNING":
            assert time.monotonic() < deadline, "the execution did not finish in time"
            time.sleep(0.1)
        self.runs += 1
        out = self.tmp_path / f"out-{self.runs}"
        out.mkdir(parents=True)
        layout = JobLayout(job_id, self.aws.settings.output_prefix)
        for key, name in (
            (layout.results, "results.jsonl"),
            (layout.errors, "errors.jsonl"),
            (layout.summary, "summary.json"),
        ):
            self.aws.download_output(key, str(out / name))
        return status, json.loads((out / "summary.json").read_text()), out

    @staticmethod
    def _seen(executions: list[dict], before: int) -> set[str]:
        # list_executions is newest first: the first `len - before` entries are the new ones.
        return {e["executionArn"] for e in executions[len(executions) - before :]}

    def ledger(self) -> list[dict]:
        return self.server.emulator.ledger()

    def batches(self) -> list[dict]:
        return self.server.emulator.list_batches(limit=100)["data"]


@contextlib.contextmanager
def local_stack(tmp_path: Path, settings: Settings, faults: str = "") -> Iterator[Stack]:
    quiet_service_logs()
    with (
        EmulatorServer(settings=settings, faults=Faults.parse(faults)) as server,
        LocalAws(settings, openai_base_url=server.base_url, openai_api_key="k", poll_seconds=1) as aws,
    ):
        yield Stack(aws, server, tmp_path)


def write_input(tmp_path: Path, count: int, *, model: str = "gpt-4o-mini", name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(chat(f"r{i}", model=model) for i in range(count)) + "\n")
    return path


def assert_nothing_billed_twice(stack: Stack) -> list[dict]:
    ledger = stack.ledger()
    assert billed_twice(ledger) == {}
    return ledger


# -- the provider's failure modes ----------------------------------------------------------------
def test_batches_refused_for_the_enqueued_token_limit_wait_and_go_again(tmp_path):
    settings = load_settings(FAST)
    path = write_input(tmp_path, 10)
    with local_stack(tmp_path, settings, faults="token_limit=2") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert (status, summary["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 10, [])
        assert summary["recovery"]["batches_resubmitted"] == 2
        assert len(assert_nothing_billed_twice(stack)) == 10
        assert sorted(b["status"] for b in stack.batches()) == ["completed"] * 3 + ["failed"] * 2


def test_shards_wait_for_room_in_the_enqueued_token_limit_and_never_exceed_it(tmp_path):
    path = write_input(tmp_path, 12)
    one_shard = load_settings(FAST)  # 4 requests of about 14 prompt tokens: about 56 tokens a shard
    with local_stack(tmp_path, one_shard) as probe:
        _, summary, _ = probe.run(path)
    shard_tokens = summary["input_tokens"] // 3
    slower = {**FAST["emulator"], "in_progress_seconds": 1.2}  # batches that last past a clock second
    settings = load_settings({**FAST, "emulator": slower, "batch_queue": {"default_tokens": shard_tokens * 3 // 2}})
    with local_stack(tmp_path / "limited", settings) as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert len(assert_nothing_billed_twice(stack)) == 12
        batches = stack.batches()
        polls = stack.aws.crashes.calls("check")
    assert (status, summary["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 12, [])
    assert polls >= 3  # each shard waited for the batch before it to end: a poll at least each
    # Room for one shard at a time: no batch was created before the one before it had ended.
    spans = sorted((b["created_at"], b["completed_at"]) for b in batches)
    assert len(spans) == 3 and all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


def test_an_expired_batch_keeps_what_it_finished_and_only_the_rest_is_sent_again(tmp_path):
    settings = load_settings({**FAST, "shard_max_requests": 10})
    path = write_input(tmp_path, 10)
    with local_stack(tmp_path, settings, faults="expire=0.5") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        batches = stack.batches()
        ledger = assert_nothing_billed_twice(stack)
    # Every round expires half way: 10 -> 5 -> 3 requests left; after three rounds the rest are errors.
    assert [b["request_counts"]["total"] for b in reversed(batches)] == [10, 5, 3]
    assert {b["status"] for b in batches} == {"expired"}
    assert (status, summary["status"]) == ("SUCCEEDED", "completed_with_errors")
    assert len(results) == len(ledger) == 8
    assert {(e["code"], e["attempts"]) for e in errors} == {("batch_expired", 3)}


def test_the_few_requests_an_expired_batch_left_go_to_the_realtime_workers_when_settings_say_so(tmp_path):
    settings = load_settings({**FAST, "shard_max_requests": 10, "recovery": {"realtime_below_requests": 5}})
    path = write_input(tmp_path, 10)
    with local_stack(tmp_path, settings, faults="expire=0.5") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert len(assert_nothing_billed_twice(stack)) == 10
        assert len(stack.batches()) == 1  # no second batch: the rest went realtime
    assert (status, summary["status"], errors) == ("SUCCEEDED", "succeeded", [])
    assert sorted(r["route"] for r in results) == ["batch"] * 5 + ["realtime"] * 5
    assert summary["input_tokens"] == sum(r["usage"]["prompt_tokens"] for r in results)


def test_requests_failing_with_server_errors_are_retried_in_a_new_round(tmp_path):
    settings = load_settings(FAST)
    path = write_input(tmp_path, 40)
    with local_stack(tmp_path, settings, faults="request_error=0.2") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert_nothing_billed_twice(stack)
        rounds = [b for b in stack.batches() if b["metadata"]["batchline_round"] != "0"]
    assert rounds, "a 20% error rate over 40 requests left nothing to retry: the fault did not fire"
    assert len(results) + len(errors) == 40
    assert all(e["attempts"] == 3 and e["status_code"] == 500 for e in errors)
    # 0.2 ** 3 of 40 is 0.32 on average; 3 or more happens once in 200 runs (it did on CI), 6 or more
    # about once in 10^8: more means the retries did not happen
    assert len(errors) <= 5
    assert summary["status"] in ("succeeded", "completed_with_errors") and status == "SUCCEEDED"


def test_a_request_the_provider_refuses_by_line_fails_alone_and_the_rest_of_its_shard_runs(tmp_path):
    settings = load_settings({**FAST, "shard_max_requests": 10})
    path = write_input(tmp_path, 10)
    with local_stack(tmp_path, settings, faults="refuse_line=r6") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        ledger = assert_nothing_billed_twice(stack)
        totals = [(b["status"], b["request_counts"]["total"]) for b in reversed(stack.batches())]
    assert (status, summary["status"], len(results)) == ("SUCCEEDED", "completed_with_errors", 9)
    assert [(e["line"], e["custom_id"], e["code"], e["attempts"]) for e in errors] == [
        (7, "r6", "invalid_json_line", 1)
    ]
    assert "line 7 of the batch file" in errors[0]["message"]
    assert totals == [("failed", 0), ("completed", 9)]  # the refused file ran nothing; the rest once
    assert len(ledger) == 9


def test_a_request_the_provider_refuses_without_naming_its_line_is_found_by_halving(tmp_path):
    settings = load_settings({**FAST, "shard_max_requests": 16})
    path = write_input(tmp_path, 16)
    with local_stack(tmp_path, settings, faults="refuse_file=r11") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        ledger = assert_nothing_billed_twice(stack)
        batches = list(reversed(stack.batches()))
    assert (status, summary["status"], len(results), len(ledger)) == ("SUCCEEDED", "completed_with_errors", 15, 15)
    assert [(e["line"], e["custom_id"], e["code"]) for e in errors] == [(12, "r11", "invalid_file_format")]
    assert "found by splitting the file" in errors[0]["message"]
    # 16 refused -> 8 run, 8 refused -> 4 run, 4 refused -> 2 refused -> 1 run, 1 refused: log2 steps, not 16
    refused = [b["request_counts"]["total"] for b in batches if b["status"] == "failed"]
    assert len(refused) == 5 and len(batches) <= 9


def test_raw_line_separators_inside_requests_reach_the_provider_escaped_and_every_request_runs(tmp_path):
    settings = load_settings({**FAST, "shard_max_requests": 10})
    path = tmp_path / "separators.jsonl"
    lines = [chat(f"r{i}") for i in range(6)]
    lines[1] = (
        chat("id\u2028with separator", text="line one\u2028line two\u0085three").encode().decode("unicode_escape")
    )
    lines[3] = chat("r3").replace(", ", ",\r ")  # CR as JSON white space
    path.write_bytes(("\n".join(lines) + "\n").encode())
    with local_stack(tmp_path, settings) as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert_nothing_billed_twice(stack)
    assert (status, summary["status"], errors) == ("SUCCEEDED", "succeeded", [])
    assert sorted(r["custom_id"] for r in results) == sorted(
        ["id\u2028with separator"] + [f"r{i}" for i in (0, 2, 3, 4, 5)]
    )


def test_a_stuck_batch_is_reported_cancelled_and_its_requests_resubmitted(tmp_path):
    settings = load_settings({**FAST, "recovery": {"stuck_after_seconds": 2}})
    path = write_input(tmp_path, 6)
    with local_stack(tmp_path, settings, faults="stuck=1") as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert_nothing_billed_twice(stack)
        statuses = sorted(b["status"] for b in stack.batches())
    assert (status, summary["status"], len(results)) == ("SUCCEEDED", "succeeded", 6)
    assert summary["recovery"]["stuck_batches"] == 1
    assert statuses == ["cancelled", "completed", "completed"]


def test_insufficient_quota_fails_the_shards_at_once_with_the_providers_reason(tmp_path):
    settings = load_settings(FAST)
    path = write_input(tmp_path, 5)
    with local_stack(tmp_path, settings, faults="insufficient_quota") as stack:
        started = time.monotonic()
        status, summary, out = stack.run(path)
        elapsed = time.monotonic() - started
        _, errors = assert_every_line_accounted_for(path, out)
        assert stack.ledger() == []
    assert status == "FAILED" and summary["status"] == "failed"
    assert {e["code"] for e in errors} == {"shard_not_completed"}
    assert all("insufficient_quota" in e["message"] for e in errors)
    assert elapsed < 30  # not retried with backoff: no wait makes quota appear


# -- crashes and resumption ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("function", "when"),
    [
        ("plan", "after"),
        ("submit", "after"),
        ("submit", "before"),
        ("check", "after"),
        ("check", "before"),
        ("finalize", "before"),
    ],
)
def test_a_crash_at_any_step_loses_nothing_and_the_rerun_pays_for_nothing_twice(tmp_path, function, when):
    settings = load_settings(FAST)
    path = write_input(tmp_path, 10)
    with local_stack(tmp_path, settings) as stack:
        stack.aws.crashes.arm(function, at_call=1, when=when)
        _, first, first_out = stack.run(path)
        assert [crash.function for crash in stack.aws.crashes.fired] == [function]
        assert_every_line_accounted_for(path, first_out)  # even the crashed run accounts for every line

        status, summary, out = stack.run(path)  # the same file again: resume
        results, errors = assert_every_line_accounted_for(path, out)
        ledger = assert_nothing_billed_twice(stack)
        batches = stack.batches()
    assert (status, summary["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 10, [])
    assert summary["job_id"] == first["job_id"] and summary["recovery"]["resumes"] == 1
    assert len(ledger) == 10
    assert len(batches) == 3  # one batch per shard, whatever crashed: nothing was submitted twice


@pytest.mark.parametrize(("function", "when"), [("enqueue", "after"), ("realtime_progress", "before")])
def test_a_crash_on_the_realtime_route_loses_nothing_and_the_rerun_pays_for_nothing_twice(tmp_path, function, when):
    settings = load_settings({**FAST, "default_mode": "realtime"})
    path = write_input(tmp_path, 10)
    with local_stack(tmp_path, settings) as stack:
        stack.aws.crashes.arm(function, at_call=1, when=when)
        _, first, first_out = stack.run(path)
        assert [crash.function for crash in stack.aws.crashes.fired] == [function]
        assert_every_line_accounted_for(path, first_out)

        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert len(assert_nothing_billed_twice(stack)) == 10
    assert (status, summary["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 10, [])
    assert {r["route"] for r in results} == {"realtime"}


def test_a_job_longer_than_one_executions_history_is_handed_over_and_finishes_once(tmp_path):
    # Two polls per execution, one batch at a time, three shards: the job needs several executions.
    settings = load_settings({**FAST, "max_polls_per_execution": 2, "map_max_concurrency": 1})
    path = write_input(tmp_path, 12)
    with local_stack(tmp_path, settings) as stack:
        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        ledger = assert_nothing_billed_twice(stack)
        executions = stack.aws.executions()
        batches = stack.batches()
    assert (status, summary["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 12, [])
    assert len(executions) >= 2 and {e["status"] for e in executions} == {"SUCCEEDED"}
    assert len(ledger) == 12 and len(batches) == 3
    assert summary["recovery"]["resumes"] == 0  # taken over, not resumed: nothing was redone
    assert summary["recovery"]["handovers"] == len(executions) - 1


def test_a_stopped_execution_resumes_on_the_batches_it_had_already_submitted(tmp_path):
    settings = load_settings({**FAST, "emulator": {**FAST["emulator"], "in_progress_seconds": 3}})
    path = write_input(tmp_path, 8)
    with local_stack(tmp_path, settings) as stack:
        stack.aws.upload_input(str(path), path.name)
        deadline = time.monotonic() + 60
        while len(stack.batches()) < 2:
            assert time.monotonic() < deadline, "the batches were never submitted"
            time.sleep(0.1)
        (execution,) = stack.aws.executions()
        stack.aws.client("stepfunctions").stop_execution(executionArn=execution["executionArn"], cause="test")
        assert stack.aws.describe(execution["executionArn"])["status"] == "ABORTED"

        status, summary, out = stack.run(path)
        results, errors = assert_every_line_accounted_for(path, out)
        assert len(assert_nothing_billed_twice(stack)) == 8
        assert len(stack.batches()) == 2  # adopted, not submitted again
    assert (status, summary["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 8, [])


def test_uploading_a_finished_file_again_sends_nothing(tmp_path):
    settings = load_settings(FAST)
    path = write_input(tmp_path, 6)
    with local_stack(tmp_path, settings) as stack:
        _, first, _ = stack.run(path)
        status, again, out = stack.run(path)
        assert len(stack.batches()) == 2 and len(assert_nothing_billed_twice(stack)) == 6
    assert (status, again["status"], again["succeeded"]) == ("SUCCEEDED", "succeeded", 6)
    assert again["cost_usd"] == first["cost_usd"]


# -- budgets ---------------------------------------------------------------------------------------
def test_a_job_whose_estimate_exceeds_its_budget_is_refused_before_any_call(tmp_path):
    settings = load_settings(FAST)
    path = write_input(tmp_path, 6)
    with local_stack(tmp_path, settings) as stack:
        status, summary, out = stack.run(path, budget_usd=1e-6)
        _, errors = assert_every_line_accounted_for(path, out)
        assert stack.batches() == [] and stack.ledger() == []
    assert status == "FAILED" and summary["status"] == "failed"
    assert "does not fit in the job budget: $0.0000 left of $0.0000" in summary["message"]
    assert {(e["stage"], e["code"]) for e in errors} == {("budget", "budget_refused")}
    assert summary["budget"]["job_spent_usd"] == 0


def test_past_the_stop_threshold_the_job_pauses_and_resumes_with_more_budget(tmp_path):
    # One shard at a time; any spend at all passes the stop threshold, so only the first shard runs.
    settings = load_settings(
        {**FAST, "map_max_concurrency": 1, "budget": {"fallback_threshold": 1e-9, "stop_threshold": 1e-9}}
    )
    path = write_input(tmp_path, 12)
    with local_stack(tmp_path, settings) as stack:
        status, paused, out = stack.run(path, budget_usd=1.0)
        _, errors = assert_every_line_accounted_for(path, out)
        assert len(stack.ledger()) == 4
        assert (status, paused["status"], paused["succeeded"]) == ("SUCCEEDED", "paused", 4)
        assert {(e["stage"], e["code"]) for e in errors} == {("budget", "budget_exhausted")} and len(errors) == 8
        assert "stop threshold" in errors[0]["message"]

        status, resumed, out = stack.run(path, budget_usd=1e6)  # the same file, with far more budget
        results, errors = assert_every_line_accounted_for(path, out)
        assert len(assert_nothing_billed_twice(stack)) == 12
    assert (status, resumed["status"], len(results), errors) == ("SUCCEEDED", "succeeded", 12, [])
    assert resumed["budget"]["job_spent_usd"] == pytest.approx(resumed["cost_usd"], abs=1e-6)


def test_past_the_first_threshold_the_rest_goes_to_the_cheaper_model(tmp_path):
    settings = load_settings(
        {
            **FAST,
            "map_max_concurrency": 1,
            "budget": {"fallback_threshold": 1e-9, "fallback_models": {"gpt-4o": "gpt-4o-mini"}},
        }
    )
    path = write_input(tmp_path, 8, model="gpt-4o")
    with local_stack(tmp_path, settings) as stack:
        status, summary, out = stack.run(path, budget_usd=10.0)
        results, _ = assert_every_line_accounted_for(path, out)
    models = [r["response"]["model"] for r in results]
    assert models[:4] == ["gpt-4o"] * 4 and models[4:] == ["gpt-4o-mini"] * 4
    assert [r["model"] for r in results[4:]] == ["gpt-4o-mini"] * 4
    assert summary["budget"]["fallback_model_used"] == "gpt-4o -> gpt-4o-mini"
    assert status == "SUCCEEDED" and summary["status"] == "succeeded"


def test_realtime_workers_never_spend_past_the_cap_and_stop_at_the_threshold(tmp_path):
    # Two workers of five messages each: at most ten requests are in flight when the threshold is
    # crossed, far fewer than the lines past it, so the job must stop with lines left unsent.
    lines, workers, batch = 60, 2, 5
    settings = load_settings(
        {
            **FAST,
            "default_mode": "realtime",
            "budget": {"fallback_threshold": 0.5, "stop_threshold": 0.5},
            "realtime": {"max_concurrency": workers, "reserved_concurrency": workers, "batch_size": batch},
        }
    )
    path = write_input(tmp_path, lines)
    with local_stack(tmp_path, settings) as stack:
        # Room for the plan's estimate and little more: the stop threshold is what ends the spending.
        estimate = lines * (25 * 0.15 + 20 * 0.60) / 1e6  # about 25 prompt and at most 20 output tokens each
        status, summary, out = stack.run(path, budget_usd=estimate * 1.2)
        results, errors = assert_every_line_accounted_for(path, out)
        assert len(assert_nothing_billed_twice(stack)) == len(results)
    cap = summary["budget"]["job_cap_usd"]
    assert summary["status"] == "paused" and status == "SUCCEEDED"
    assert results and errors and {e["stage"] for e in errors} == {"budget"}
    assert summary["budget"]["job_spent_usd"] <= cap
    # Past the threshold, only what was already in flight (each worker's batch) was sent.
    most = max(r["usage"]["prompt_tokens"] * 0.15 + r["usage"]["completion_tokens"] * 0.60 for r in results) / 1e6
    assert summary["budget"]["job_spent_usd"] <= 0.5 * cap + workers * batch * most
