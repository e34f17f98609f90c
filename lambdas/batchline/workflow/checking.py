"""Read a shard's batch's status and progress, record them, and decide what comes next for the shard.

- ``collect`` when the batch has ended (completed, expired, cancelled, or failed for good);
- ``resubmit`` when it failed only because the enqueued-token queue was full: its room in the
  ledger is given back and the same round is submitted again after a wait;
- ``wait`` otherwise. A batch sitting in validating or finalizing past the configured limit is
  reported (a metric and the job record) and cancelled; what it finished is collected, and its
  other requests go to the next round.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.openai_batches import batch_is_terminal
from batchline.domain.errors import ProviderError
from batchline.domain.recovery import failed_for_token_limit, is_stuck, next_poll_seconds, seconds_in_status
from batchline.domain.statuses import BATCH_RUNNING, BatchStatus, ShardStatus
from batchline.handlers.dependencies import admission_ledger, environment, job_store, openai_batches
from batchline.observability import logger, metrics, publish_metric
from batchline.topology import (
    BATCH_AGE_METRIC,
    BATCHES_RESUBMITTED_METRIC,
    BATCHES_STUCK_METRIC,
)
from batchline.workflow.submission import ticket_for


def check_batch(shard: dict[str, Any], batch_id: str, poll_floor: int) -> dict[str, Any]:
    """The shard's batch as it stands: next is collect, resubmit or wait (with wait_seconds).

    `poll_floor` is the shortest wait between two checks (the settings' poll_seconds, or the
    local run's).
    """
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    logger.append_keys(job_id=job_id, shard_id=shard_id, batch_id=batch_id)
    store = job_store()
    gateway = openai_batches()
    batch = gateway.retrieve_batch(batch_id)
    status, now = batch["status"], time.time()
    store.update_shard(job_id, shard_id, batch_status=status, request_counts=batch.get("request_counts") or {})
    if not batch_is_terminal(batch):
        publish_metric(BATCH_AGE_METRIC, seconds_in_status(batch, now), MetricUnit.Seconds, status=status)

    if failed_for_token_limit(batch):
        record = store.get_shard(job_id, shard_id) or {}
        ticket = ticket_for(job_id, shard_id, int(record.get("round", 0)))
        admission_ledger().release(record.get("round_model") or shard["model"], ticket)
        # The uploaded file stays valid: the next attempt creates a batch from it again.
        store.update_shard(
            job_id, shard_id, status=ShardStatus.WAITING_ADMISSION, remove=("batch_id", "batch_status", "submit_claim")
        )
        store.add_to_job(job_id, batches_resubmitted=1)
        metrics.add_metric(name=BATCHES_RESUBMITTED_METRIC, unit=MetricUnit.Count, value=1)
        logger.warning("batch refused for the enqueued-token limit; submitting again later")
        return {"batch_id": batch_id, "status": status, "next": "resubmit"}
    if batch_is_terminal(batch):
        return {"batch_id": batch_id, "status": status, "next": "collect"}

    if status in BATCH_RUNNING:
        job = store.get_job(job_id) or {}
        if job.get("cancel_requested"):
            # A batch created just as the user cancelled: cancel it too; what it finished is kept.
            logger.warning("job cancelled by the user; cancelling its batch")
            _cancel_unless_ended(gateway, batch_id)
            return {"batch_id": batch_id, "status": BatchStatus.CANCELLING, "next": "wait", "wait_seconds": 1}
    stuck_after = environment().settings.recovery.stuck_after_seconds
    if is_stuck(batch, now, stuck_after):
        record = store.get_shard(job_id, shard_id) or {}
        if not record.get("stuck_cancelled_batch") == batch_id:
            store.update_shard(job_id, shard_id, stuck_cancelled_batch=batch_id, stuck_status=status)
            store.add_to_job(job_id, stuck_batches=1)
            metrics.add_metric(name=BATCHES_STUCK_METRIC, unit=MetricUnit.Count, value=1)
            logger.error("batch stuck; cancelling it", extra={"status": status, "limit_seconds": stuck_after})
            _cancel_unless_ended(gateway, batch_id)
    wait = next_poll_seconds(
        batch, now, floor=poll_floor, ceiling=max(poll_floor, environment().settings.max_poll_seconds)
    )
    logger.info("batch not done yet", extra={"status": status, "wait_seconds": wait})
    return {"batch_id": batch_id, "status": status, "next": "wait", "wait_seconds": wait}


def _cancel_unless_ended(gateway: Any, batch_id: str) -> None:
    """Cancel the batch; a refusal because it is cancelled or ended already (`batchline cancel`, or
    the batch finishing, got there first) is no failure: the next check collects it as it ended."""
    try:
        gateway.cancel_batch(batch_id)
    except ProviderError:
        now = gateway.retrieve_batch(batch_id)
        if now.get("status") != BatchStatus.CANCELLING and not batch_is_terminal(now):
            raise
