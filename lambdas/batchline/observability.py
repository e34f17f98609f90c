"""What the functions say about themselves: structured logs, metrics and traces, with no prompt in them.

Logs carry an error's type and place, never its message (it may quote a request or an answer);
traces never capture a response. The use cases log through the standard logging module under
"batchline", which these handlers format.
"""

from __future__ import annotations

import traceback
from typing import Any

import orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from batchline.domain.statuses import JobStatus
from batchline.topology import (
    METRICS_NAMESPACE,
    MONTHLY_BUDGET_METRIC,
    MONTHLY_SPEND_METRIC,
    PROVIDER_CALLS_METRIC,
    PROVIDER_RATE_LIMITED_METRIC,
    SERVICE_NAME,
)


class ExceptionTextFreeFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines, with a logged exception reduced to its type and the frames it came through.

    An exception's message may quote what the code was handling: a line of the input (a prompt, a
    custom_id), a provider's answer or an error echoing either. None of that belongs in a log, so no
    ``logger.exception`` anywhere writes it; the frames (file, line, function, source line) are code.
    """

    def formatException(self, ei) -> str:  # noqa: N802 (logging.Formatter's name)
        kind, _, tb = ei
        frames = "".join(traceback.format_list(traceback.extract_tb(tb)))
        return f"Traceback (most recent call last):\n{frames}{getattr(kind, '__name__', kind)}"


def error_fields(error: BaseException) -> dict[str, str]:
    """What a log line may say of an error: its type and where it was raised, never its message."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return {"error_type": type(error).__name__, "error_at": where}


# serialize_stacktrace off: its "value" field is the exception's message.
logger = Logger(service=SERVICE_NAME, logger_formatter=ExceptionTextFreeFormatter(serialize_stacktrace=False))
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
# X-Ray in the deployed functions (off outside Lambda). Responses are never captured: they hold
# prompts and completions, which must stay out of traces as they stay out of logs.
tracer = Tracer(service=SERVICE_NAME)


def publish_metric(name: str, value: float, unit: MetricUnit, **dimensions: str) -> None:
    """One metric in a record of its own: its dimensions (service, plus any given) apply to it alone.

    The job metrics share one record per route (`metrics`); these do not belong in it.
    """
    if is_metrics_disabled():
        return
    with single_metric(name=name, unit=unit, value=value, namespace=METRICS_NAMESPACE) as metric:
        for key, dimension in {"service": SERVICE_NAME, **dimensions}.items():
            metric.add_dimension(name=key, value=dimension)


class DashboardMetrics:
    """The use cases' Metrics port, on Powertools: counts join the invocation's record of job metrics
    (flushed by `metrics.log_metrics`), published metrics go out in records of their own."""

    def count(self, name: str, value: float = 1) -> None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def publish(self, name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
        publish_metric(name, value, MetricUnit(unit), **dimensions)


_JOBS_BY_STATUS = {
    JobStatus.PAUSED: "JobsPaused",
    JobStatus.CANCELLED: "JobsCancelled",
    JobStatus.SUCCEEDED: "JobsSucceeded",
    JobStatus.COMPLETED_WITH_ERRORS: "JobsCompletedWithErrors",
    JobStatus.FAILED: "JobsFailed",
}


def publish_job_metrics(summary: dict[str, Any]) -> None:
    """What the dashboard shows of a finished job, per route: jobs by outcome, requests, tokens and
    spend; the month's spend and cap in records of their own (they are not per route)."""
    metrics.clear_metrics()  # one record per job, whatever an earlier invocation left unflushed
    metrics.add_dimension(name="route", value=summary.get("route") or "none")
    metrics.add_metric(name=_JOBS_BY_STATUS[summary["status"]], unit=MetricUnit.Count, value=1)
    for name, field in (
        ("RequestsSucceeded", "succeeded"),
        ("RequestsFailed", "failed"),
        ("InvalidLines", "invalid"),
        ("InputTokens", "input_tokens"),
        ("OutputTokens", "output_tokens"),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary[field])
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=summary["cost_usd"])
    budget = summary.get("budget") or {}
    publish_metric(MONTHLY_SPEND_METRIC, budget.get("monthly_spent_usd") or 0.0, MetricUnit.NoUnit)
    if budget.get("monthly_cap_usd") is not None:
        publish_metric(MONTHLY_BUDGET_METRIC, budget["monthly_cap_usd"], MetricUnit.NoUnit)


def step_functions_failure(error: dict[str, Any] | None) -> str | None:
    """The failure a state machine's Catch hands on (Error, and Cause: a Lambda's error as JSON), as text."""
    if not error:
        return None
    cause = error.get("Cause") or ""
    try:
        cause = orjson.loads(cause).get("errorMessage", cause)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"{error.get('Error', 'Error')}: {cause}"[:2000]


def publish_realtime_report(report: Any, *, messages: int) -> None:
    """A worker's batch, as the dashboard and the logs see it: provider calls, 429s, answers, requeues."""
    if report.calls:
        publish_metric(PROVIDER_CALLS_METRIC, report.calls, MetricUnit.Count)
        publish_metric(PROVIDER_RATE_LIMITED_METRIC, report.rate_limited, MetricUnit.Count)
    logger.info(
        "worked a batch",
        extra={
            "messages": messages,
            "calls": report.calls,
            "rate_limited": report.rate_limited,
            "answered": report.answered,
            "requeued": report.requeued,
        },
    )
