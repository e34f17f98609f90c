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

from batchline.domain.budget import month_of
from batchline.domain.errors import TransientProviderError
from batchline.domain.records import ShardRecord
from batchline.domain.statuses import ENDED_SHARD_STATUSES
from batchline.observability import error_fields, logger
from batchline.topology import SHARDS_FAILED_METRIC
from batchline.workflow.checking import Checking
from batchline.workflow.collection import Collection
from batchline.workflow.enqueueing import Enqueueing
from batchline.workflow.loop_context import LoopContext
from batchline.workflow.realtime_wait import RealtimeWait
from batchline.workflow.submission import Submission, ticket_for

# Seconds a step may need (an upload or a collect of a full shard). With less left before the
# function's timeout, the rest of the shards wait for the next invocation, which comes at once.
STEP_SECONDS = 120.0


class ShardLoop:
    """The batch route's poll loop over one job, and the steps it is made of."""

    def __init__(self, context: LoopContext) -> None:
        self.context = context
        self.enqueueing = Enqueueing(context)
        self.submission = Submission(context, self.enqueueing)
        self.checking = Checking(context)
        self.collection = Collection(context, self.enqueueing)
        self.realtime_wait = RealtimeWait(context)

    def first_pass(
        self, job_id: str, *, poll_floor: int | None, attempt: str, seconds_left: Callable[[], float]
    ) -> dict[str, Any]:
        """SubmitShards: send every shard that may go now. Never finished: CheckShards decides that."""
        progress = self.advance(job_id, check=False, poll_floor=poll_floor, attempt=attempt, seconds_left=seconds_left)
        return {**progress, "finished": False, "polls": 0}

    def poll(
        self, job_id: str, *, polls: int, poll_floor: int | None, attempt: str, seconds_left: Callable[[], float]
    ) -> dict[str, Any]:
        """CheckShards: one poll; after max_polls_per_execution a new execution takes the job over, as
        each poll adds about nine events to an execution's history, which holds 25,000 at most."""
        progress = self.advance(job_id, check=True, poll_floor=poll_floor, attempt=attempt, seconds_left=seconds_left)
        progress["polls"] = polls + 1
        progress["hand_over"] = (
            not progress["finished"] and progress["polls"] >= self.context.settings.max_polls_per_execution
        )
        if progress["hand_over"]:
            logger.info("handing the job over to a new execution", extra={"polls": progress["polls"]})
        return progress

    def advance(
        self,
        job_id: str,
        *,
        check: bool,
        poll_floor: int | None,
        attempt: str,
        seconds_left: Callable[[], float],
    ) -> dict[str, Any]:
        """One pass over the job's unfinished shards; answers {finished, wait_seconds, shards: counts}.

        `check` is False on the first pass (SubmitShards: nothing runs yet, unless the job is resumed)
        and True on every later one (CheckShards). `attempt` names this invocation in submission claims.
        `poll_floor` is the shortest wait (the local run's; the settings' poll_seconds when None).
        """
        logger.append_keys(job_id=job_id)
        floor = poll_floor or self.context.settings.poll_seconds
        jobs = self.context.jobs
        records = sorted(jobs.list_shards(job_id), key=lambda record: record.shard_id)
        in_flight_limit = self.context.settings.batches_in_flight
        running = sum(1 for r in records if r.batch_id and r.status not in ENDED_SHARD_STATUSES)
        waits: list[int] = []
        counts = {"ended": 0, "running": 0, "waiting": 0}
        for record in records:
            if record.status in ENDED_SHARD_STATUSES:
                counts["ended"] += 1
                continue
            if seconds_left() < STEP_SECONDS:
                waits.append(0)  # no time left in this invocation: the next one takes the rest
                counts["waiting"] += 1
                continue
            had_batch = bool(record.batch_id)
            if not had_batch and running >= in_flight_limit:
                waits.append(floor)  # as many batches in flight as settings allow
                counts["waiting"] += 1
                continue
            wait: int | None
            try:
                wait, has_batch = self._step(record, check=check, poll_floor=floor, attempt=attempt)
            except TransientProviderError as error:
                wait, has_batch = self._transient_failure(record, error, floor), had_batch
            except Exception as error:  # noqa: BLE001 (one shard's failure must not stop the others)
                self._fail(record, error)
                wait, has_batch = None, False
            else:
                if record.step_errors:
                    jobs.update_shard(job_id, record.shard_id, remove=("step_errors",))
            has_batch = has_batch and wait is not None
            running += int(has_batch) - int(had_batch)
            if wait is None:
                counts["ended"] += 1
            else:
                waits.append(wait)
                counts["running" if has_batch else "waiting"] += 1

        if waits:
            return {"finished": False, "wait_seconds": min(waits), "shards": counts}
        realtime = self.realtime_wait.progress(job_id)
        if not realtime["finished"]:
            return {"finished": False, "wait_seconds": floor, "shards": counts, "realtime": realtime}
        return {"finished": True, "wait_seconds": 0, "shards": counts, "realtime": realtime}

    def _step(self, shard: ShardRecord, *, check: bool, poll_floor: int, attempt: str) -> tuple[int | None, bool]:
        """Move one shard on: (seconds until it needs looking at again, or None when it ended; has a batch)."""
        if shard.batch_id:
            if not check:
                return poll_floor, True  # a resumed job's batch: check it after the first wait
            checked = self.checking.check_batch(shard, shard.batch_id, poll_floor)
            if checked["next"] == "wait":
                return int(checked["wait_seconds"]), True
            if checked["next"] == "resubmit":
                return poll_floor, False  # the provider's queue was full: give it a poll before trying again
            if not self.collection.collect_batch(shard.job_id, shard.shard_id, shard.batch_id)["retry"]:
                return None, False
        submitted = self.submission.submit_round(shard.job_id, shard.shard_id, attempt)
        if submitted["action"] == "done":
            return None, False
        return poll_floor, submitted["action"] == "wait_batch"

    def _give_back_round(self, record: ShardRecord) -> None:
        """A failed shard's round will not be collected: its room in the enqueued-token ledger goes back
        now (later shards, of any job, would wait for it for ever), and its budget reservation too when
        no batch of it can bill. A batch it did create keeps its reservation until the job ends."""
        ticket = ticket_for(record.job_id, record.shard_id, record.round)
        self.context.admission.release(record.current_model, ticket)
        if not record.batch_id:
            job = self.context.jobs.get_job(record.job_id)
            month = (job and job.budget_month) or month_of(self.context.clock.now())
            self.context.budgets.settle(record.job_id, month, ticket, 0)

    def _transient_failure(self, shard: ShardRecord, error: Exception, poll_floor: int) -> int | None:
        """Try the shard's step again at the next poll, unless it failed this way too often in a row."""
        attempts = self.context.jobs.count_shard_error(shard.job_id, shard.shard_id)
        if attempts >= self.context.settings.step_attempts:
            self._fail(shard, error, note=f" ({attempts} attempts in a row)")
            return None
        # The error's type and place, never its message (it may echo a request); the shard keeps the message.
        logger.warning("shard step failed; trying again next poll", extra={"attempts": attempts, **error_fields(error)})
        return poll_floor

    def _fail(self, shard: ShardRecord, error: Exception, note: str = "") -> None:
        reason = f"{type(error).__name__}: {error}{note}"[:2000]
        jobs = self.context.jobs
        if not jobs.fail_shard(shard.job_id, shard.shard_id, reason):
            # The step that failed had finished its work: the shard keeps it.
            logger.warning("shard already collected; failure not recorded", extra=error_fields(error))
            return
        self._give_back_round(jobs.get_shard(shard.job_id, shard.shard_id) or shard)
        self.context.metrics.publish(SHARDS_FAILED_METRIC, 1)
        logger.exception("shard failed", extra={"shard_id": shard.shard_id, **error_fields(error)})
