"""Plan: validate, count and shard the uploaded file, by the use case (workflow/planning_job.py).

The event is the upload (bucket and key), or a hand-over from an execution whose history was
filling up (`handover_from`, with the job's id).
"""

from __future__ import annotations

from typing import Any

from batchline.metering import metered
from batchline.observability import logger, tracer
from batchline.wiring import job_planning


@metered("plan", lambda event, result: [result["job_id"]] if result else [])
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    planning = job_planning()
    if event.get("handover_from"):
        return planning.take_over(event["job_id"], event["handover_from"])
    return planning.plan(event["bucket"], event["key"])
