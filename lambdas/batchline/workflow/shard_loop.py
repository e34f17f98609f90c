"""Move every shard of a job one step on: submit what is due, check what runs, collect what ended.

The state machine runs one poll loop per job (SubmitShards -> WaitForBatches -> CheckShards ->
AllShardsDone), not one per shard. Step Functions bills every state transition, and a loop per
shard spent about eight on each shard however small: on a job of four (endpoint, model) groups
that was more than 0.1% of what the batches themselves cost. One loop costs three transitions a
poll for the whole job, and a poll checks all of its batches.

A shard's step that fails does not stop the others: a transient provider error is tried again at
the next poll, up to `recovery.step_attempts` times in a row, and any other error fails that
shard alone, with its reason (Finalize reports its requests as errors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from batchline.domain.budget import month_of
from batchline.domain.errors import TransientProviderError
from batchline.domain.statuses import ENDED_SHARD_STATUSES
from batchline.handlers.dependencies import admission_ledger, budgets, environment, job_store
from batchline.observability import error_fields, logger, publish_metric
from batchline.topology import SHARDS_FAILED_METRIC
from batchline.workflow.checking import check_batch
from batchline.workflow.collection import collect_batch
from batchline.workflow.realtime_wait import realtime_progress
from batchline.workflow.submission import submit_round, ticket_for

# Seconds a step may need (an upload or a collect of a full shard). With less left before the
# function's timeout, the rest of the shards wait for the next invocation, which comes at once.
STEP_SECONDS = 120.0


def advance_shards(
    job_id: str,
    *,
    check: bool,
    poll_floor: int,
    attempt: str,
    seconds_left: Callable[[], float],
) -> dict[str, Any]:
    """One pass over the job's unfinished shards; answers {finished, wait_seconds, shards: counts}.

    `check` is False on the first pass (SubmitShards: nothing runs yet, unless the job is resumed)
    and True on every later one (CheckShards). `attempt` names this invocation in submission claims.
    """
    store = job_store()
    records = sorted(store.list_shards(job_id), key=lambda record: record["shard_id"])
    in_flight_limit = environment().settings.map_max_concurrency
    running = sum(1 for r in records if r.get("batch_id") and r.get("status") not in ENDED_SHARD_STATUSES)
    waits: list[int] = []
    counts = {"ended": 0, "running": 0, "waiting": 0}
    for record in records:
        if record.get("status") in ENDED_SHARD_STATUSES:
            counts["ended"] += 1
            continue
        if seconds_left() < STEP_SECONDS:
            waits.append(0)  # no time left in this invocation: the next one takes the rest
            counts["waiting"] += 1
            continue
        shard = {**record, "job_id": job_id}
        had_batch = bool(record.get("batch_id"))
        if not had_batch and running >= in_flight_limit:
            waits.append(poll_floor)  # as many batches in flight as settings allow
            counts["waiting"] += 1
            continue
        try:
            wait, has_batch = _step(shard, check=check, poll_floor=poll_floor, attempt=attempt)
        except TransientProviderError as error:
            wait, has_batch = _transient_failure(shard, error, poll_floor), had_batch
        except Exception as error:  # noqa: BLE001 (one shard's failure must not stop the others)
            _fail(shard, error)
            wait, has_batch = None, False
        else:
            if record.get("step_errors"):
                store.update_shard(job_id, shard["shard_id"], remove=("step_errors",))
        has_batch = has_batch and wait is not None
        running += int(has_batch) - int(had_batch)
        if wait is None:
            counts["ended"] += 1
        else:
            waits.append(wait)
            counts["running" if has_batch else "waiting"] += 1

    if waits:
        return {"finished": False, "wait_seconds": min(waits), "shards": counts}
    realtime = realtime_progress(job_id)
    if not realtime["finished"]:
        return {"finished": False, "wait_seconds": poll_floor, "shards": counts, "realtime": realtime}
    return {"finished": True, "wait_seconds": 0, "shards": counts, "realtime": realtime}


def _step(shard: dict[str, Any], *, check: bool, poll_floor: int, attempt: str) -> tuple[int | None, bool]:
    """Move one shard on: (seconds until it needs looking at again, or None when it ended; has a batch)."""
    batch_id = shard.get("batch_id")
    if batch_id:
        if not check:
            return poll_floor, True  # a resumed job's batch: check it after the first wait
        checked = check_batch(shard, batch_id, poll_floor)
        if checked["next"] == "wait":
            return int(checked["wait_seconds"]), True
        if checked["next"] == "resubmit":
            return poll_floor, False  # the provider's queue was full: give it a poll before trying again
        if not collect_batch(shard, batch_id)["retry"]:
            return None, False
        shard = {**job_store().get_shard(shard["job_id"], shard["shard_id"]), "job_id": shard["job_id"]}
    submitted = submit_round(shard, attempt)
    if submitted["action"] == "done":
        return None, False
    return poll_floor, submitted["action"] == "wait_batch"


def _give_back_round(record: dict[str, Any], job_id: str) -> None:
    """A failed shard's round will not be collected: its room in the enqueued-token ledger goes back
    now (later shards, of any job, would wait for it for ever), and its budget reservation too when
    no batch of it can bill. A batch it did create keeps its reservation until the job ends."""
    ticket = ticket_for(job_id, record["shard_id"], int(record.get("round", 0)))
    admission_ledger().release(record.get("round_model") or record["model"], ticket)
    if not record.get("batch_id"):
        job = job_store().get_job(job_id) or {}
        budgets().settle(job_id, job.get("budget_month") or month_of(), ticket, 0)


def _transient_failure(shard: dict[str, Any], error: Exception, poll_floor: int) -> int | None:
    """Try the shard's step again at the next poll, unless it failed this way too often in a row."""
    attempts = job_store().count_shard_error(shard["job_id"], shard["shard_id"])
    limit = environment().settings.recovery.step_attempts
    if attempts >= limit:
        _fail(shard, error, note=f" ({attempts} attempts in a row)")
        return None
    # The error's type and place, never its message (it may echo a request); the shard keeps the message.
    logger.warning("shard step failed; trying again next poll", extra={"attempts": attempts, **error_fields(error)})
    return poll_floor


def _fail(shard: dict[str, Any], error: Exception, note: str = "") -> None:
    reason = f"{type(error).__name__}: {error}{note}"[:2000]
    store = job_store()
    if not store.fail_shard(shard["job_id"], shard["shard_id"], reason):
        # The step that failed had finished its work: the shard keeps it.
        logger.warning("shard already collected; failure not recorded", extra=error_fields(error))
        return
    _give_back_round(store.get_shard(shard["job_id"], shard["shard_id"]) or shard, shard["job_id"])
    publish_metric(SHARDS_FAILED_METRIC, 1, MetricUnit.Count)
    logger.exception("shard failed", extra={"shard_id": shard["shard_id"], **error_fields(error)})
