"""RealtimeProgress: the realtime route's wait for every request it queued to have an outcome."""

from __future__ import annotations

from typing import Any

from batchline.metering import metered
from batchline.observability import logger, tracer
from batchline.wiring import environment, realtime_wait


@metered("realtime_progress", lambda event, result: [event["plan"]["job_id"]])
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    previous = event.get("realtime") or {}
    progress = realtime_wait().progress(
        event["plan"]["job_id"],
        polls=int(previous.get("polls", 0)),
        waited_seconds=int(previous.get("wait_seconds", 0)),
    )
    # A local run (its poll_seconds below the deployed one) checks at its own pace.
    local_pace = int(event.get("poll_seconds") or 0)
    if local_pace and local_pace < environment().settings.poll_seconds:
        progress["wait_seconds"] = local_pace
    return progress
