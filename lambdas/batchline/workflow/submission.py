"""Send a shard's current round to the provider as a batch, once, within budget and queue limits.

Answers what the shard waits for next:
- ``wait_batch``: a batch runs (created now, or by an earlier attempt and found again);
- ``wait_admission``: the model's enqueued-token queue has no room yet, try again after a wait;
- ``done``: nothing left to send (collected earlier, the budget stopped the shard, or the user
  cancelled the job: the shard ends "cancelled" and its unsent round is reported by Finalize).

Each step is recorded before it acts on the outside world and after, and everything it does is
safe to repeat: the budget and the queue are reserved with tickets, the file id is recorded, and a
batch is looked for by its metadata before one is created.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from batchline.domain.budget import Stance, month_of, stop_message, to_nano
from batchline.domain.errors import ShardStateError
from batchline.domain.layout import JobLayout
from batchline.domain.records import JobRecord, ShardRecord
from batchline.domain.shard_lines import canonical_line
from batchline.domain.statuses import ShardStatus
from batchline.observability import logger
from batchline.topology import BATCHES_SUBMITTED_METRIC, BUDGET_FALLBACK_METRIC, BUDGET_STOP_METRIC
from batchline.workflow.enqueueing import Enqueueing
from batchline.workflow.loop_context import LoopContext

# How long a claim to create a shard's batch holds: longer than any Submit can run.
_CLAIM_SECONDS = 1800


def ticket_for(job_id: str, shard_id: str, round_number: int) -> str:
    """Names the budget reservation and the queue admission of one round of one shard."""
    return f"{job_id}#{shard_id}#r{round_number}"


def batch_metadata(job_id: str, shard_id: str, round_number: int) -> dict[str, str]:
    return {"batchline_job_id": job_id, "batchline_shard_id": shard_id, "batchline_round": str(round_number)}


Answer = dict[str, Any]


class Submission:
    def __init__(self, context: LoopContext, enqueueing: Enqueueing) -> None:
        self.context = context
        self.enqueueing = enqueueing

    def submit_round(self, job_id: str, shard_id: str, attempt: str) -> Answer:
        """Submit the shard's current round unless it runs already; `attempt` names the caller in claims.

        The answer's action is wait_batch (with batch_id), wait_admission or done.
        """
        logger.append_keys(job_id=job_id, shard_id=shard_id)
        jobs = self.context.jobs
        record = jobs.get_shard(job_id, shard_id)
        if record is None:
            raise ShardStateError(f"shard {shard_id} of job {job_id} has no record; was the job planned?")
        if record.status == ShardStatus.COLLECTED:
            return {"action": "done", "stopped": False}
        if record.status in (ShardStatus.REALTIME, ShardStatus.REALTIME_REQUEUE):
            # Its last requests went to the realtime path; queue again any that may have been lost
            # (a worker skips a request that already has an outcome).
            self.enqueueing.enqueue_round(job_id, shard_id, record.round)
            jobs.update_shard(job_id, shard_id, status=ShardStatus.REALTIME)
            return {"action": "done", "stopped": False}
        logger.append_keys(round=record.round)
        if record.batch_id:
            return {"action": "wait_batch", "batch_id": record.batch_id}

        found = self.context.batches.find_batch(batch_metadata(job_id, shard_id, record.round))
        if found is not None:
            # Created by an attempt that stopped before recording it: adopt it, never pay twice.
            jobs.update_shard(
                job_id, shard_id, status=ShardStatus.SUBMITTED, batch_id=found["id"], batch_status=found["status"]
            )
            logger.warning("adopted a batch created by an earlier attempt", extra={"batch_id": found["id"]})
            return {"action": "wait_batch", "batch_id": found["id"]}

        job = jobs.get_job(job_id) or JobRecord(job_id=job_id)
        month = job.budget_month or month_of(self.context.clock.now())
        if job.cancel_requested:
            return self._cancelled(record, month, attempt)
        model, stop_reason = self._choose_model(record, month)
        if model is None:
            return self._stop(job_id, shard_id, stop_reason or "budget")
        jobs.update_shard(job_id, shard_id, round_model=model)
        ticket = ticket_for(job_id, shard_id, record.round)
        estimate = self._round_estimate_nano(record, model)
        if not self.context.budgets.take(job_id, month, estimate, piece=ticket):
            return self._stop(
                job_id, shard_id, "not sent: no room left in the job's or the month's budget for this batch"
            )
        return self._admitted_and_sent(record, model, attempt)

    def _admitted_and_sent(self, record: ShardRecord, model: str, attempt: str) -> Answer:
        """Within budget: the round is admitted to the model's enqueued-token queue, claimed, and sent."""
        job_id, shard_id, round_number = record.job_id, record.shard_id, record.round
        jobs, settings = self.context.jobs, self.context.settings
        ticket = ticket_for(job_id, shard_id, round_number)
        _, prompt_tokens, _ = record.round_figures()
        limit = settings.queue_limit(model)
        if prompt_tokens > limit:
            raise ShardStateError(
                f"shard {shard_id} holds {prompt_tokens:,} prompt tokens, more than the whole enqueued-token limit "
                f"of {model} ({limit:,}); planning cuts shards to fit, so the settings changed since it was planned"
            )
        if not self.context.admission.admit(model, ticket, prompt_tokens, limit):
            jobs.update_shard(job_id, shard_id, status=ShardStatus.WAITING_ADMISSION)
            logger.info("waiting for room in the enqueued-token limit", extra={"model": model, "tokens": prompt_tokens})
            return {"action": "wait_admission"}

        if not self._claim(job_id, shard_id, attempt):
            logger.warning("another attempt is submitting this shard; waiting for it")
            return {"action": "wait_admission"}  # back here after a wait, to find its batch
        file_id = record.input_file_id
        if not file_id:
            file_id = self._upload(record, model)
            jobs.update_shard(job_id, shard_id, input_file_id=file_id, status=ShardStatus.UPLOADED)
        jobs.update_shard(job_id, shard_id, status=ShardStatus.SUBMITTING, submitting_at=self.context.now_iso())
        batch = self.context.batches.create_batch(
            input_file_id=file_id,
            endpoint=record.url,
            completion_window=settings.completion_window,
            metadata=batch_metadata(job_id, shard_id, round_number),
        )
        jobs.update_shard(
            job_id,
            shard_id,
            status=ShardStatus.SUBMITTED,
            batch_id=batch["id"],
            batch_status=batch["status"],
            submitted_at=self.context.now_iso(),
        )
        self.context.metrics.count(BATCHES_SUBMITTED_METRIC)
        logger.info("submitted", extra={"batch_id": batch["id"], "model": model, "prompt_tokens": prompt_tokens})
        return {"action": "wait_batch", "batch_id": batch["id"]}

    def _claim(self, job_id: str, shard_id: str, attempt: str) -> bool:
        """The shard's submission claim, taken from no one or from a holder older than any Submit runs."""
        claim = f"{attempt}-{uuid.uuid4()}"
        stale = (self.context.clock.now() - timedelta(seconds=_CLAIM_SECONDS)).isoformat(timespec="milliseconds")
        return self.context.jobs.claim_submission(job_id, shard_id, claim, stale_before=stale)

    def _round_estimate_nano(self, record: ShardRecord, model: str) -> int:
        """The round's worst case at batch price for the model it will run on."""
        _, prompt_tokens, share = record.round_figures()
        cost = self.context.prices.batch_cost(model, prompt_tokens, round(record.max_output_tokens * share))
        return to_nano(cost)

    def _stop(self, job_id: str, shard_id: str, reason: str) -> Answer:
        jobs = self.context.jobs
        jobs.update_shard(
            job_id, shard_id, status=ShardStatus.BUDGET_STOPPED, stop_reason=reason, remove=("round_model",)
        )
        jobs.update_job(job_id, budget_paused=reason)
        self.context.metrics.count(BUDGET_STOP_METRIC)
        logger.warning("budget stop", extra={"reason": reason})
        return {"action": "done", "stopped": True}

    def _choose_model(self, record: ShardRecord, month: str) -> tuple[str | None, str | None]:
        """(model, stop reason): the model this round runs on, decided once per round; None when stopped."""
        if record.round_model:
            return record.round_model, None
        job_scope, month_scope = self.context.budgets.usage(record.job_id, month)
        policy = self.context.budget_policy
        stance = policy.stance(job_scope, month_scope)
        if stance is Stance.STOP:
            return None, stop_message((job_scope, month_scope), policy.stop_threshold)
        model = policy.model_for(record.model, stance)
        if model != record.model:
            self.context.jobs.update_job(record.job_id, fallback_model_used=f"{record.model} -> {model}")
            self.context.metrics.count(BUDGET_FALLBACK_METRIC)
            logger.warning("budget fallback", extra={"from": record.model, "to": model})
        return model, None

    def _upload(self, record: ShardRecord, model: str) -> str:
        """Upload the round's file; rewritten for the fallback model when the round runs on one."""
        job_id, shard_id, round_number = record.job_id, record.shard_id, record.round
        layout = JobLayout(job_id, self.context.settings.output_prefix)
        storage = self.context.storage
        key = layout.round_requests(shard_id, round_number)
        if model != record.model:
            fallback_key = layout.round_upload(shard_id, round_number, model)
            with storage.writer(fallback_key) as writer:
                for raw in storage.lines(key):
                    if raw:
                        request = orjson.loads(raw)
                        request["body"]["model"] = model
                        writer.write(canonical_line(orjson.dumps(request)) + b"\n")  # orjson writes U+2028 raw
            key = fallback_key
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{job_id}-{shard_id}-r{round_number}.jsonl"
            storage.download(key, str(path))
            return self.context.batches.upload_batch_file(path)

    def _cancelled(self, record: ShardRecord, month: str, attempt: str) -> Answer:
        """The user cancelled the job: send nothing new. Finalize reports the round's requests as cancelled.

        Under the shard's submission claim, so that no other attempt creates a batch meanwhile; an
        attempt holding it may be creating one right now, and is waited for like any claim holder.
        The round may hold a budget reservation and room in the enqueued-token ledger (a batch refused
        for the token limit keeps its reservation); both are given back, once.
        """
        job_id, shard_id = record.job_id, record.shard_id
        if not self._claim(job_id, shard_id, attempt):
            return {"action": "wait_admission"}  # back here after a wait: its batch is then found and waited for
        ticket = ticket_for(job_id, shard_id, record.round)
        self.context.budgets.settle(job_id, month, ticket, 0)
        self.context.admission.release(record.current_model, ticket)
        self.context.jobs.update_shard(
            job_id, shard_id, status=ShardStatus.CANCELLED, remove=("round_model", "submit_claim")
        )
        logger.info("not submitted: the job was cancelled")
        return {"action": "done", "stopped": False}
