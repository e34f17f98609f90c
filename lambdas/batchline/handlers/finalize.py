"""Finalize: the job's three outputs and its report, written by the use case (workflow/finalizing.py).

The handler reads the event (the job, and the failure when the state machine's Catch led here),
has the use case write the outputs, and publishes the job's metrics for the dashboard.
"""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit

from batchline.domain.layout import content_hash, make_job_id
from batchline.handlers.dependencies import finalization, metered, objects
from batchline.observability import logger, metrics, publish_metric, tracer
from batchline.topology import MONTHLY_BUDGET_METRIC, MONTHLY_SPEND_METRIC


def _failure_text(error: dict | None) -> str | None:
    if not error:
        return None
    cause = error.get("Cause") or ""
    try:
        cause = orjson.loads(cause).get("errorMessage", cause)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"{error.get('Error', 'Error')}: {cause}"[:2000]


def _job_id(event: dict) -> str:
    plan = event.get("plan") or {}
    if plan.get("job_id"):
        return plan["job_id"]
    # Plan never finished: the id is derived the same way, or marks the input as missing.
    source = objects(event["bucket"])
    if not source.exists(event["key"]):
        return make_job_id(event["key"], "missing")
    return make_job_id(event["key"], content_hash(source.chunks(event["key"])))


_STATUS_METRIC = {
    "paused": "JobsPaused",
    "cancelled": "JobsCancelled",
    "succeeded": "JobsSucceeded",
    "completed_with_errors": "JobsCompletedWithErrors",
    "failed": "JobsFailed",
}


def _publish_metrics(summary: dict) -> None:
    """What the dashboard shows per route: jobs by outcome, requests, tokens and spend."""
    metrics.clear_metrics()  # one record per job, whatever an earlier invocation left unflushed
    metrics.add_dimension(name="route", value=summary.get("route") or "none")
    metrics.add_metric(name=_STATUS_METRIC[summary["status"]], unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="RequestsSucceeded", unit=MetricUnit.Count, value=summary["succeeded"])
    metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=summary["failed"])
    metrics.add_metric(name="InvalidLines", unit=MetricUnit.Count, value=summary["invalid"])
    metrics.add_metric(name="InputTokens", unit=MetricUnit.Count, value=summary["input_tokens"])
    metrics.add_metric(name="OutputTokens", unit=MetricUnit.Count, value=summary["output_tokens"])
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=summary["cost_usd"])
    budget = summary.get("budget") or {}
    monthly = {MONTHLY_SPEND_METRIC: budget.get("monthly_spent_usd") or 0.0}
    if budget.get("monthly_cap_usd") is not None:
        monthly[MONTHLY_BUDGET_METRIC] = budget["monthly_cap_usd"]
    for name, value in monthly.items():  # not per route: records of their own
        publish_metric(name, value, MetricUnit.NoUnit)


@metered("finalize", lambda event, result: [result["job_id"]] if result else [])
@metrics.log_metrics
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job_id = _job_id(event)
    logger.append_keys(job_id=job_id)
    summary = finalization().finalize(job_id, failure=_failure_text(event.get("error")))
    _publish_metrics(summary)
    logger.info("finalized", extra={"status": summary["status"], "succeeded": summary["succeeded"]})
    return {"job_id": job_id, "status": summary["status"], "message": summary["message"]}
