"""The SQS-to-Lambda event source mapping, emulated: moto has none that behaves like AWS.

Like the real mapping, it receives up to `batch_size` messages with their attributes, builds the
Lambda SQS event, runs at most `max_concurrency` invocations at once, deletes the messages the
function did not report in ``batchItemFailures``, and leaves those for redelivery after the
visibility timeout (moto applies the queue's redrive policy to the dead-letter queue).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

QUEUE_ARN_ATTRIBUTE = "QueueArn"


def sqs_event(messages: list[dict], *, queue_arn: str, region: str) -> dict:
    """The event Lambda receives from an SQS event source, built from ReceiveMessage's answer."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def settle(sqs: Any, queue_url: str, messages: list[dict], failed_ids: set[str]) -> None:
    """Delete the messages the function handled; the failed ones reappear after their visibility timeout."""
    done = [m for m in messages if m["MessageId"] not in failed_ids]
    for start in range(0, len(done), 10):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


class SqsEventSource:
    """Pollers that deliver the queue's messages to the function, as Lambda's event source does.

    Each poller gathers up to `batch_size` messages (ten per ReceiveMessage, as SQS allows) for at
    most `batching_window_seconds`, invokes the function with them and settles the answer. An
    invocation that fails or times out deletes nothing: its messages reappear after their
    visibility timeout, and the poller goes on polling, as the real event source does.
    """

    def __init__(
        self,
        *,
        sqs: Any,
        lambda_client: Any,
        queue_url: str,
        function_name: str,
        batch_size: int,
        max_concurrency: int,
        region: str,
        batching_window_seconds: float = 0.0,
    ) -> None:
        self._sqs = sqs
        self._lambda = lambda_client
        self._queue_url = queue_url
        self._function = function_name
        self._batch_size = batch_size
        self._window = batching_window_seconds
        self._region = region
        self._arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[QUEUE_ARN_ATTRIBUTE])["Attributes"][
            QUEUE_ARN_ATTRIBUTE
        ]
        self._stop = threading.Event()
        self._pollers = [
            threading.Thread(target=self._poll, name=f"sqs-poller-{i}", daemon=True) for i in range(max_concurrency)
        ]
        self._lock = threading.Lock()
        self.invocations = 0
        self.invocation_errors = 0
        self.delivered_messages = 0
        self.failed_messages = 0

    def start(self) -> SqsEventSource:
        for poller in self._pollers:
            poller.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop polling, and wait up to `timeout` seconds in all for the invocations under way to end.

        True when every poller ended; a poller still in its invocation then is left to it (its
        messages are not settled, so they would be delivered again, as in AWS).
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        for poller in self._pollers:
            poller.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(poller.is_alive() for poller in self._pollers)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._gather()
                if messages:
                    self._deliver(messages)
            except Exception:  # noqa: BLE001 (a poller never dies: the real event source keeps polling)
                with self._lock:
                    self.invocation_errors += 1
                logger.exception("the SQS event source failed to deliver a batch; its messages will reappear")
                self._stop.wait(1.0)

    def _gather(self) -> list[dict]:
        """Up to batch_size messages: the first receive waits for one, then gathers for the batching window."""
        messages: list[dict] = []
        deadline = time.monotonic() + self._window
        while len(messages) < self._batch_size and not self._stop.is_set():
            waiting = 1 if not messages else 0
            received = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(10, self._batch_size - len(messages)),
                WaitTimeSeconds=waiting,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages += received
            if not messages:
                return messages
            if not received:
                if time.monotonic() >= deadline:
                    break
                self._stop.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        return messages

    def _deliver(self, messages: list[dict]) -> None:
        event = sqs_event(messages, queue_arn=self._arn, region=self._region)
        with self._lock:
            self.invocations += 1
            self.delivered_messages += len(messages)
        response = self._lambda.invoke(FunctionName=self._function, Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            failed = {m["MessageId"] for m in messages}  # the whole batch comes back, as in AWS
            logger.error(
                "worker invocation failed: %s: %s",
                (payload or {}).get("errorType"),
                (payload or {}).get("errorMessage"),
            )
        else:
            failed = {item["itemIdentifier"] for item in (payload or {}).get("batchItemFailures", [])}
        with self._lock:
            self.failed_messages += len(failed)
        settle(self._sqs, self._queue_url, messages, failed)
