"""SubmitShards: the first pass of a batch job's poll loop (workflow/shard_loop.py): send every shard
that may go now. Shards beyond the enqueued-token or in-flight limits wait for CheckShards; a
resumed job's batches already running are left to it as well."""

from __future__ import annotations

from typing import Any

from batchline.metering import metered
from batchline.observability import logger, metrics, tracer
from batchline.wiring import seconds_left, shard_loop


@metered("submit", lambda event, result: [event["job_id"]])
@metrics.log_metrics
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return shard_loop().first_pass(
        event["job_id"],
        poll_floor=int(event.get("poll_seconds") or 0) or None,
        attempt=str(getattr(context, "aws_request_id", "")),
        seconds_left=seconds_left(context),
    )
