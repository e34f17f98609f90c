"""RealtimeProgress: the realtime route's wait for every request it queued to have an outcome."""

from __future__ import annotations

from typing import Any

from batchline.handlers.dependencies import logger, metered, tracer
from batchline.workflow.realtime_wait import realtime_progress


@metered("realtime_progress", lambda event, result: [event["plan"]["job_id"]])
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return realtime_progress(event["plan"]["job_id"])
