"""The realtime queue's messages as the workers read them back (Enqueueing writes them).

A message names its job, line, custom_id, endpoint, model and token cost, and carries the request
body, or the key of the object holding a body too big for a message. A request asked again because its
answer failed its JSON Schema comes back with `schema_failures`, how many answers did so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from batchline.domain.realtime import RealtimeRequest
from batchline.workflow.realtime_work import Delivery

# What an unreadable message raises on the way to a Delivery.
UNREADABLE = (orjson.JSONDecodeError, KeyError, TypeError, ValueError)


def delivery_of(record: dict[str, Any], load_body: Callable[[str], dict[str, Any]]) -> Delivery:
    """One SQS record of the worker's event, its body fetched by `load_body(key)` when spilled."""
    message = orjson.loads(record["body"])
    body = load_body(message["body_key"]) if "body_key" in message else message["body"]
    request = RealtimeRequest(
        job_id=message["job_id"],
        line=int(message["line"]),
        custom_id=message["custom_id"],
        url=message["url"],
        model=message["model"],
        body=body,
        token_cost=int(message["token_cost"]),
        schema_failures=int(message.get("schema_failures", 0)),
    )
    return Delivery(
        message_id=record["messageId"],
        receipt_handle=record["receiptHandle"],
        receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
        raw=record["body"],
        request=request,
    )


def jobs_of(records: Iterable[dict[str, Any]]) -> list[str]:
    """The jobs whose messages a batch of records holds (an unreadable one names none)."""
    jobs = []
    for record in records:
        try:
            jobs.append(orjson.loads(record["body"])["job_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return jobs
