"""The realtime queue: requests go on in batches of up to 10 messages and 256 KB.

A request too large for one SQS message (256 KB) still goes: its body is kept in S3 and the
message carries the key instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

import orjson

from batchline.adapters.aws_meter import default_session

SQS_MAX_MESSAGE_BYTES = 262_144
SQS_MAX_BATCH_MESSAGES = 10
# Room left for the message envelope and attributes.
_BODY_BUDGET = SQS_MAX_MESSAGE_BYTES - 2_048


@cache
def sqs_client() -> Any:
    return default_session().client("sqs")


class RequestQueue:
    def __init__(self, queue_url: str, *, client: Any = None) -> None:
        self._url = queue_url
        self._client = client or sqs_client()

    def send_all(self, messages: Iterable[dict], *, spill: Callable[[dict], dict]) -> int:
        """Send every message; `spill(message)` moves an oversized body to S3 and returns the lighter message."""
        sent = 0
        entries: list[dict] = []
        size = 0
        for message in messages:
            body = orjson.dumps(message)
            if len(body) > _BODY_BUDGET:
                body = orjson.dumps(spill(message))
            if len(entries) == SQS_MAX_BATCH_MESSAGES or size + len(body) > SQS_MAX_MESSAGE_BYTES:
                sent += self._send(entries)
                entries, size = [], 0
            entries.append({"Id": str(len(entries)), "MessageBody": body.decode()})
            size += len(body)
        if entries:
            sent += self._send(entries)
        return sent

    def requeue_all(self, bodies: Sequence[tuple[str, float]]) -> None:
        """Send messages again as new ones (their receive counts start over), each visible after its delay.

        Waiting for room in the rate limit is not a failure: it must never use up the deliveries
        after which a message goes to the dead-letter queue. SQS delays a message 15 minutes at most.
        """
        for start in range(0, len(bodies), SQS_MAX_BATCH_MESSAGES):
            entries = [
                {"Id": str(i), "MessageBody": body, "DelaySeconds": max(0, min(900, math.ceil(seconds)))}
                for i, (body, seconds) in enumerate(bodies[start : start + SQS_MAX_BATCH_MESSAGES])
            ]
            self._send(entries)

    def retry_all_in(self, receipts: Sequence[tuple[str, float]]) -> None:
        """Make received messages visible again after their delays, not after the whole visibility timeout."""
        for start in range(0, len(receipts), SQS_MAX_BATCH_MESSAGES):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": max(0, min(43_200, math.ceil(seconds)))}
                for i, (handle, seconds) in enumerate(receipts[start : start + SQS_MAX_BATCH_MESSAGES])
            ]
            self._client.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)

    def _send(self, entries: list[dict]) -> int:
        pending = entries
        for _ in range(5):
            failed = self._client.send_message_batch(QueueUrl=self._url, Entries=pending).get("Failed", [])
            if not failed:
                return len(entries)
            failed_ids = {f["Id"] for f in failed if not f.get("SenderFault")}
            if len(failed_ids) != len(failed):
                raise RuntimeError(f"SQS refused messages: {failed}")
            pending = [e for e in pending if e["Id"] in failed_ids]
        raise RuntimeError(f"SQS kept failing {len(pending)} messages")
