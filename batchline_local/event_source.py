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
    ) -> None:
        self._sqs = sqs
        self._lambda = lambda_client
        self._queue_url = queue_url
        self._function = function_name
        self._batch_size = batch_size
        self._region = region
        self._arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[QUEUE_ARN_ATTRIBUTE])["Attributes"][
            QUEUE_ARN_ATTRIBUTE
        ]
        self._stop = threading.Event()
        self._pollers = [
            threading.Thread(target=self._poll, name=f"sqs-poller-{i}", daemon=True) for i in range(max_concurrency)
        ]
        self.invocations = 0
        self.failed_messages = 0

    def start(self) -> SqsEventSource:
        for poller in self._pollers:
            poller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for poller in self._pollers:
            poller.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.is_set():
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=self._batch_size,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if messages:
                self._deliver(messages)

    def _deliver(self, messages: list[dict]) -> None:
        event = sqs_event(messages, queue_arn=self._arn, region=self._region)
        response = self._lambda.invoke(FunctionName=self._function, Payload=json.dumps(event).encode())
        self.invocations += 1
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
        self.failed_messages += len(failed)
        settle(self._sqs, self._queue_url, messages, failed)
