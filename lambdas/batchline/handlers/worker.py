"""Worker: one SQS batch of realtime requests, worked as a whole at the shared rate limit
(workflow/realtime_work.py), answered as a partial batch response: the messages named come back
after the backoff the use case set; an unreadable message fails, to rest in the dead-letter queue."""

from __future__ import annotations

from typing import Any

from batchline import wiring
from batchline.metering import event_source_requests, metered, worker_jobs
from batchline.observability import error_fields, logger, publish_realtime_report, tracer
from batchline.workflow.realtime_messages import UNREADABLE, delivery_of


@metered("worker", worker_jobs, sqs_requests=event_source_requests)
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    deliveries, failures = [], []
    for record in event.get("Records", []):
        try:
            deliveries.append(delivery_of(record, wiring.spilled_body))
        except UNREADABLE as exc:  # its type only: the message may quote the body (a custom_id, a prompt)
            logger.error("unreadable realtime message", extra={"message_id": record["messageId"], **error_fields(exc)})
            failures.append(record["messageId"])
    invocation = getattr(context, "aws_request_id", "") or ""  # names the invocation in its sending marks
    report = wiring.realtime_work(wiring.seconds_left(context), invocation).work(deliveries)
    publish_realtime_report(report, messages=len(deliveries))
    failures += report.retry_message_ids
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
