"""Worker: one SQS batch of realtime requests, worked as a whole at the shared rate limit.

Parses the event, hands the batch to the use case (workflow/realtime_work.py), and answers with a
partial batch response: the messages named there come back after the backoff the use case set on
their visibility; every other message is done (answered, recorded as not sent, or put back on the
queue as a new message for when the rate limit has room). A message that cannot even be read is
reported failed, so that after its last delivery it rests in the dead-letter queue.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit

from batchline.domain.realtime import RealtimeRequest
from batchline.handlers.dependencies import metered, output_objects, realtime_work, seconds_left
from batchline.observability import error_fields, logger, publish_metric, tracer
from batchline.topology import PROVIDER_CALLS_METRIC, PROVIDER_RATE_LIMITED_METRIC
from batchline.workflow.realtime_work import Delivery

_SQS_MESSAGES_PER_CALL = 10


def _delivery(record: dict) -> Delivery:
    message = orjson.loads(record["body"])
    if "body_key" in message:  # too big for a message: the body waits in S3
        message["body"] = orjson.loads(b"".join(output_objects().chunks(message["body_key"])))
    request = RealtimeRequest(
        job_id=message["job_id"],
        line=int(message["line"]),
        custom_id=message["custom_id"],
        url=message["url"],
        model=message["model"],
        body=message["body"],
        token_cost=int(message["token_cost"]),
    )
    return Delivery(
        message_id=record["messageId"],
        receipt_handle=record["receiptHandle"],
        receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        raw=record["body"],
        request=request,
    )


def _jobs_of_batch(event: dict, result: Any) -> list[str]:
    """The jobs whose messages an invocation served: its usage is shared among them."""
    jobs = []
    for record in event.get("Records", []):
        try:
            jobs.append(orjson.loads(record["body"])["job_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return jobs


def _event_source_requests(event: dict[str, Any]) -> int:
    """The SQS requests Lambda's event source made for this batch: receives and deletes, ten at a time."""
    return 2 * math.ceil(len(event.get("Records", [])) / _SQS_MESSAGES_PER_CALL)


@metered("worker", _jobs_of_batch, sqs_requests=_event_source_requests)
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    deliveries, unreadable = [], []
    for record in event.get("Records", []):
        try:
            deliveries.append(_delivery(record))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # The error's type only: its message may quote the message's body (a custom_id, a prompt).
            logger.error(
                "unreadable realtime message", extra={"message_id": record.get("messageId"), **error_fields(exc)}
            )
            unreadable.append(record["messageId"])
    invocation = getattr(context, "aws_request_id", "") or ""
    report = realtime_work(seconds_left(context), invocation).work(deliveries)
    if report.calls:
        publish_metric(PROVIDER_CALLS_METRIC, report.calls, MetricUnit.Count)
        publish_metric(PROVIDER_RATE_LIMITED_METRIC, report.rate_limited, MetricUnit.Count)
    logger.info(
        "worked a batch",
        extra={
            "messages": len(deliveries),
            "calls": report.calls,
            "rate_limited": report.rate_limited,
            "answered": report.answered,
            "requeued": report.requeued,
        },
    )
    failures = [*unreadable, *report.retry_message_ids]
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
