"""How many requests sent on the realtime path have an outcome; the wait is over when all do.

On the realtime route that is every valid request; on the batch route, the requests that the
last rounds of some shards sent realtime (few enough, per settings, not to be worth a batch).

A job also stops waiting when nothing has moved for `realtime.stall_seconds` (messages stuck in
the dead letter queue, say): Finalize then reports the requests without an outcome as errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.job_store import now_iso
from batchline.handlers.dependencies import environment, job_store, logger, publish_metric
from batchline.topology import REALTIME_BACKLOG_METRIC


def realtime_progress(job_id: str) -> dict[str, Any]:
    """{done, total, finished, stalled} of the job's realtime requests."""
    job = job_store().get_job(job_id) or {}
    total = job.get("valid", 0) if job.get("route") == "realtime" else job.get("realtime_expected", 0)
    done = job.get("realtime_done", 0)
    last = job.get("realtime_updated_at") or job.get("started_at") or now_iso()
    idle = (datetime.fromisoformat(now_iso()) - datetime.fromisoformat(last)).total_seconds()
    stalled = done < total and idle > environment().settings.realtime.stall_seconds
    if stalled:
        logger.warning("realtime requests stalled", extra={"done": done, "total": total, "idle_seconds": idle})
    if total:
        publish_metric(REALTIME_BACKLOG_METRIC, max(0, total - done), MetricUnit.Count)
    return {"done": done, "total": total, "finished": done >= total or stalled, "stalled": stalled}
