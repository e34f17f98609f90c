"""What `batchline status` reads from the job table: progress per route and per shard, status, spend."""

from __future__ import annotations

import msgspec
from batchline.domain.budget import to_nano
from batchline.domain.records import JobRecord, ShardRecord

from batchline_cli.job_progress import job_progress, shard_progress, shown_status


def shard(shard_id: str = "00001", **fields) -> ShardRecord:
    """A shard's record as the job table returns it."""
    item = {"job_id": "j", "shard_id": shard_id, "model": "gpt-4o-mini", "url": "/v1/chat/completions", "requests": 10}
    return msgspec.convert({**item, **fields}, ShardRecord)


def job(fields: dict) -> JobRecord:
    """A job's record as the job table returns it."""
    return msgspec.convert({"job_id": "j", **fields}, JobRecord)


def test_a_running_batch_counts_its_requests_done_beside_the_rounds_collected_before():
    view = shard_progress(
        shard(
            status="submitted",
            round=1,
            round_requests=4,
            succeeded=6,
            batch_id="batch_2",
            batch_status="in_progress",
            request_counts={"total": 4, "completed": 2, "failed": 1},
        )
    )
    assert (view.done, view.batch_completed, view.batch_failed, view.batch_total) == (9, 2, 1, 4)
    assert view.batch_in_flight and not view.ended


def test_counts_left_by_the_previous_round_are_not_counted_again():
    # Round 0 (10 requests) was collected; its counts stay on the item until Check sees the new batch.
    view = shard_progress(
        shard(
            status="submitted",
            round=1,
            round_requests=4,
            succeeded=6,
            batch_id="batch_2",
            request_counts={"total": 10, "completed": 6, "failed": 4},
        )
    )
    assert (view.done, view.batch_total) == (6, None)


def test_an_ended_shard_counts_whole_and_a_round_sent_realtime_shows_on_the_realtime_bar():
    cancelled = shard_progress(shard(status="cancelled"))
    leftovers = shard_progress(shard(status="realtime", round=1, round_requests=3, succeeded=7))
    assert (cancelled.ended, cancelled.done, cancelled.on_batch) == (True, 10, 10)
    assert (leftovers.done, leftovers.on_batch, leftovers.sent_realtime) == (7, 7, 3)

    view = job_progress(
        job({"status": "running", "route": "batch", "valid": 20, "realtime_expected": 3, "realtime_done": 1}),
        [shard("00001", status="cancelled"), shard("00002", status="realtime", round_requests=3, succeeded=7)],
    )
    assert (view.batch_done, view.batch_total, view.realtime_done, view.realtime_total) == (17, 17, 1, 3)
    assert view.done == 18


def test_a_cancelled_job_says_cancelling_until_it_ends_then_cancelled_or_stopped_when_stopped_at_once():
    assert shown_status(job({"status": "running", "cancel_requested": "2025-01-01T00:00:00"})) == "cancelling"
    assert shown_status(job({"status": "completed_with_errors", "cancel_requested": "2025-01-01"})) == "cancelled"
    assert shown_status(job({"status": "running"})) == "running"
    # `cancel --now` stopped the execution: no Finalize will end it.
    assert shown_status(job({"status": "running", "cancel_requested": "t", "execution_stopped": "arn"})) == "stopped"


def test_spend_splits_the_committed_budget_into_spent_in_flight_and_held():
    record = job(
        {
            "status": "running",
            "route": "realtime",
            "valid": 5,
            "budget_cap_nano": to_nano(1.0),
            "committed_nano": to_nano(0.6),
            "hold_nano": to_nano(0.3),
            "spent_nano": to_nano(0.1),
            "realtime_cost_nano_usd": to_nano(0.1),
        }
    )
    view = job_progress(record, [shard(status="enqueued")])
    spend = view.spend
    assert (spend.cap_usd, spend.spent_usd, spend.held_usd) == (1.0, 0.1, 0.3)
    assert round(spend.in_flight_usd, 9) == 0.2
    assert view.cost_usd == 0.1 and (view.batch_total, view.realtime_total) == (0, 5)


def test_a_finished_job_reports_its_summary_figures():
    record = job({"status": "succeeded", "valid": 8, "cost_usd": 0.25, "finished_at": "t", "message": "ok"})
    view = job_progress(record, [])
    assert (view.finished, view.done, view.cost_usd, view.finished_at, view.message) == (True, 8, 0.25, "t", "ok")
