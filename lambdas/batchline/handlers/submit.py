"""SubmitShards: the first pass of a batch job's poll loop: send every shard that may go now.

Shards beyond the enqueued-token limit or the in-flight limit wait for CheckShards; a resumed
job's batches already running are left to it as well.
"""

from __future__ import annotations

from typing import Any

from batchline.handlers.dependencies import environment, metered, seconds_left
from batchline.observability import logger, metrics, tracer
from batchline.workflow.shard_loop import advance_shards


@metered("submit", lambda event, result: [event["job_id"]])
@metrics.log_metrics
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    progress = advance_job(event, context, check=False)
    return {**progress, "finished": False, "polls": 0}  # CheckShards decides when the job is finished


def advance_job(event: dict[str, Any], context: Any, *, check: bool) -> dict[str, Any]:
    """One pass of the poll loop over the job the event names (SubmitShards' and CheckShards' event)."""
    logger.append_keys(job_id=event["job_id"])
    return advance_shards(
        event["job_id"],
        check=check,
        poll_floor=int(event.get("poll_seconds") or environment().settings.poll_seconds),
        attempt=str(getattr(context, "aws_request_id", "")),
        seconds_left=seconds_left(context),
    )
