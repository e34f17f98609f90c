"""How many requests sent on the realtime path have an outcome; the wait is over when all do.

On the realtime route that is every valid request; on the batch route, the requests that the
last rounds of some shards sent realtime (few enough, per settings, not to be worth a batch).
An outcome is an answer (a result or the provider's final refusal) or a request this run could not
send (the job was stopped, the budget ran out): those stay unanswered for a resubmission.

The wait between two checks grows with what is left (half the time the rest should take at the
pace so far, between the settings' poll_seconds and max_poll_seconds), so a job that runs for days
polls rarely; after max_polls_per_execution checks a new execution takes the job over, as the batch
loop does. A local run polls every second but is billed as the deployed loop would be: each check
stands for the deployed polls its wait covers (`billed_polls`).

A job also stops waiting when nothing has moved for `realtime.stall_seconds` (messages stuck in
the dead letter queue, say): Finalize then reports the requests without an outcome as errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batchline.domain.records import JobRecord
from batchline.observability import logger
from batchline.topology import REALTIME_BACKLOG_METRIC
from batchline.workflow.loop_context import LoopContext


def _seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


class RealtimeWait:
    def __init__(self, context: LoopContext) -> None:
        self.context = context

    def progress(self, job_id: str, *, polls: int = 0, waited_seconds: int = 0) -> dict[str, Any]:
        """{done, total, finished, stalled, wait_seconds, polls, hand_over, billed_polls} of the job's
        realtime requests."""
        settings = self.context.settings
        jobs = self.context.jobs
        job = jobs.get_job(job_id) or JobRecord(job_id=job_id)
        total, done = job.realtime_total, job.realtime_outcomes
        now = self.context.now_iso()
        started = job.resumed_at or job.started_at or now
        last = job.realtime_updated_at or started
        idle = _seconds_between(last, now)
        stalled = done < total and idle > settings.realtime_stall_seconds
        if stalled:
            logger.warning("realtime requests stalled", extra={"done": done, "total": total, "idle_seconds": idle})
        if total:
            self.context.metrics.publish(REALTIME_BACKLOG_METRIC, max(0, total - done))
        finished = done >= total or stalled
        # The deployed loop's next wait: half of what the rest should take at the pace so far.
        elapsed = max(1.0, _seconds_between(started, now))
        answered_this_run = max(1, job.realtime_done - job.realtime_done_at_start)
        rest = (total - done) * elapsed / answered_this_run
        deployed_wait = int(min(settings.max_poll_seconds, max(settings.poll_seconds, rest / 2)))
        # A local run waits less than the deployed loop would: bill only the deployed polls its waits add up to.
        credit = job.realtime_poll_credit + waited_seconds
        billed = 1 if finished or polls == 0 else int(credit // deployed_wait)
        credit = 0.0 if finished else credit - billed * deployed_wait if billed else credit
        if waited_seconds:
            jobs.update_job(job_id, realtime_poll_credit=round(credit, 3))
        polls += 1
        return {
            "done": done,
            "total": total,
            "finished": finished,
            "stalled": stalled,
            "wait_seconds": deployed_wait,
            "polls": polls,
            "hand_over": not finished and polls >= settings.max_polls_per_execution,
            "billed_polls": billed,
        }
