"""Read a shard's batch's status and progress, record them, and decide what comes next for the shard.

- ``collect`` when the batch has ended (completed, expired, cancelled, or failed for good);
- ``resubmit`` when it failed only because the enqueued-token queue was full: its room in the
  ledger is given back and the same round is submitted again after a wait;
- ``wait`` otherwise. A batch sitting in validating or finalizing past the configured limit is
  reported (a metric and the job record) and cancelled; what it finished is collected, and its
  other requests go to the next round.
"""

from __future__ import annotations

from typing import Any

from batchline.domain.errors import ProviderError
from batchline.domain.records import ShardRecord
from batchline.domain.recovery import failed_for_token_limit, is_stuck, next_poll_seconds, seconds_in_status
from batchline.domain.statuses import BATCH_RUNNING, BatchStatus, ShardStatus, batch_has_ended
from batchline.observability import logger
from batchline.topology import BATCH_AGE_METRIC, BATCHES_RESUBMITTED_METRIC, BATCHES_STUCK_METRIC
from batchline.workflow.loop_context import LoopContext
from batchline.workflow.submission import ticket_for


class Checking:
    def __init__(self, context: LoopContext) -> None:
        self.context = context

    def check_batch(self, shard: ShardRecord, batch_id: str, poll_floor: int) -> dict[str, Any]:
        """The shard's batch as it stands: next is collect, resubmit or wait (with wait_seconds).

        `poll_floor` is the shortest wait between two checks (the settings' poll_seconds, or the
        local run's).
        """
        job_id, shard_id = shard.job_id, shard.shard_id
        logger.append_keys(job_id=job_id, shard_id=shard_id, batch_id=batch_id)
        jobs, metrics, settings = self.context.jobs, self.context.metrics, self.context.settings
        batch = self.context.batches.retrieve_batch(batch_id)
        status, now = batch["status"], self.context.clock.now().timestamp()
        jobs.update_shard(job_id, shard_id, batch_status=status, request_counts=batch.get("request_counts") or {})
        if not batch_has_ended(batch):
            metrics.publish(BATCH_AGE_METRIC, seconds_in_status(batch, now), "Seconds", status=status)

        if failed_for_token_limit(batch):
            ticket = ticket_for(job_id, shard_id, shard.round)
            self.context.admission.release(shard.current_model, ticket)
            # The uploaded file stays valid: the next attempt creates a batch from it again.
            jobs.update_shard(
                job_id,
                shard_id,
                status=ShardStatus.WAITING_ADMISSION,
                remove=("batch_id", "batch_status", "submit_claim"),
            )
            jobs.add_to_job(job_id, batches_resubmitted=1)
            metrics.count(BATCHES_RESUBMITTED_METRIC)
            logger.warning("batch refused for the enqueued-token limit; submitting again later")
            return {"batch_id": batch_id, "status": status, "next": "resubmit"}
        if batch_has_ended(batch):
            return {"batch_id": batch_id, "status": status, "next": "collect"}

        if status in BATCH_RUNNING:
            job = jobs.get_job(job_id)
            if job is not None and job.cancel_requested:
                # A batch created just as the user cancelled: cancel it too; what it finished is kept.
                logger.warning("job cancelled by the user; cancelling its batch")
                self._cancel_unless_ended(batch_id)
                return {"batch_id": batch_id, "status": BatchStatus.CANCELLING, "next": "wait", "wait_seconds": 1}
        if is_stuck(batch, now, settings.stuck_after_seconds):
            if shard.stuck_cancelled_batch != batch_id:
                jobs.update_shard(job_id, shard_id, stuck_cancelled_batch=batch_id, stuck_status=status)
                jobs.add_to_job(job_id, stuck_batches=1)
                metrics.count(BATCHES_STUCK_METRIC)
                logger.error(
                    "batch stuck; cancelling it",
                    extra={"status": status, "limit_seconds": settings.stuck_after_seconds},
                )
                self._cancel_unless_ended(batch_id)
        wait = next_poll_seconds(batch, now, floor=poll_floor, ceiling=max(poll_floor, settings.max_poll_seconds))
        logger.info("batch not done yet", extra={"status": status, "wait_seconds": wait})
        return {"batch_id": batch_id, "status": status, "next": "wait", "wait_seconds": wait}

    def _cancel_unless_ended(self, batch_id: str) -> None:
        """Cancel the batch; a refusal because it is cancelled or ended already (`batchline cancel`, or
        the batch finishing, got there first) is no failure: the next check collects it as it ended."""
        batches = self.context.batches
        try:
            batches.cancel_batch(batch_id)
        except ProviderError:
            now = batches.retrieve_batch(batch_id)
            if now.get("status") != BatchStatus.CANCELLING and not batch_has_ended(now):
                raise
