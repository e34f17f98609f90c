"""Finalize: the job's outputs and report (workflow/finalizing.py), then its metrics for the dashboard.

The event carries Plan's answer, or only the upload and the failure when the state machine's Catch
led here before Plan finished.
"""

from __future__ import annotations

from typing import Any

from batchline.metering import metered
from batchline.observability import logger, metrics, publish_job_metrics, step_functions_failure, tracer
from batchline.wiring import finalization


@metered("finalize", lambda event, result: [result["job_id"]] if result else [])
@metrics.log_metrics
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failure = step_functions_failure(event.get("error"))
    summary = finalization().finalize_run(event, failure=failure)
    logger.append_keys(job_id=summary["job_id"])
    publish_job_metrics(summary)
    logger.info("finalized", extra={"status": summary["status"], "succeeded": summary["succeeded"]})
    return {"job_id": summary["job_id"], "status": summary["status"], "message": summary["message"]}
