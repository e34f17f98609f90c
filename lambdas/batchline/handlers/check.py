"""CheckShards: one poll of a batch job (workflow/shard_loop.py): check every running batch, collect
those that ended, submit the next rounds and the shards that were waiting, and say whether the job
is finished: every shard ended and every request a round sent realtime has an outcome."""

from __future__ import annotations

from typing import Any

from batchline.metering import metered
from batchline.observability import logger, metrics, tracer
from batchline.wiring import seconds_left, shard_loop


@metered("check", lambda event, result: [event["job_id"]])
@metrics.log_metrics
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return shard_loop().poll(
        event["job_id"],
        polls=int(event.get("polls") or 0),
        poll_floor=int(event.get("poll_seconds") or 0) or None,
        attempt=str(getattr(context, "aws_request_id", "")),
        seconds_left=seconds_left(context),
    )
