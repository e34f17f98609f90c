"""The hot path: realtime requests on an SQS queue, drained by a worker at the provider's limit.

Two constructs, because every function's environment names the queue: the stack builds the queue
first, then the functions (the state machine's and the worker) with its URL.
- ``RealtimeQueue``: the queue (encrypted, TLS only, redrive to a dead-letter queue after
  ``realtime.max_receive_count`` deliveries) and that dead-letter queue.
- ``RealtimeWorker``: the worker function and its event source mapping: batches of
  ``realtime.batch_size``, at most ``realtime.max_concurrency`` at once, partial batch responses.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from batchline.settings import RealtimeSettings
from batchline.topology import WORKER
from constructs import Construct

from infra.constants import VISIBILITY_TIMEOUT_FACTOR
from infra.encryption import DataKey
from infra.functions import batchline_function

# What Lambda's poller calls with the function's role; DeleteMessage removes the successes of a batch.
EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
# What SQS needs of a customer-managed key: a sender generates (and decrypts) the data key, a receiver decrypts it.
_QUEUE_KEY_USE = {
    "sqs:SendMessage": {"kms:GenerateDataKey", "kms:Decrypt"},
    "sqs:ReceiveMessage": {"kms:Decrypt"},
}


class RealtimeQueue(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        realtime: RealtimeSettings,
        dead_letter_days: int,
        key: DataKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self._key = key
        # SQS-managed keys, or the customer-managed key for both queues (SQS moves dead letters itself).
        encryption = (
            {"encryption": sqs.QueueEncryption.KMS, "encryption_master_key": key.key}
            if key.key is not None
            else {"encryption": sqs.QueueEncryption.SQS_MANAGED}
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetters",
            **encryption,
            enforce_ssl=True,
            retention_period=Duration.days(dead_letter_days),
        )
        self.queue = sqs.Queue(
            self,
            "Requests",
            **encryption,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(VISIBILITY_TIMEOUT_FACTOR * realtime.worker_timeout_seconds),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=realtime.max_receive_count
            ),
        )

    def grant(self, grantee: iam.IGrantable, *actions: str) -> iam.Grant:
        """Exactly these actions on the request queue (never on the dead-letter queue), and the key use they need."""
        self._key.grant_via(grantee, "sqs", set().union(*(_QUEUE_KEY_USE.get(action, set()) for action in actions)))
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[self.queue.queue_arn])


class RealtimeWorker(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: RealtimeQueue,
        realtime: RealtimeSettings,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
        environment: Mapping[str, str],
        memory_mb: int,
        log_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = batchline_function(
            self,
            name=WORKER.name,
            handler=WORKER.handler,
            description=WORKER.description,
            code=code,
            layer=layer,
            environment=environment,
            memory_mb=memory_mb,
            timeout=Duration.seconds(realtime.worker_timeout_seconds),
            reserved_concurrency=realtime.reserved_concurrency,
            log_days=log_days,
            # ephemeral storage left at Lambda's minimum: the worker keeps nothing in /tmp.
        )
        # Beside the function rather than inside it, so that the function's acknowledgements stay on it.
        self.event_source = lambda_.EventSourceMapping(
            self,
            "Requests",
            target=self.function,
            event_source_arn=queue.queue.queue_arn,
            batch_size=realtime.batch_size,
            # Lambda gathers a batch over more than ten messages only within a batching window.
            max_batching_window=Duration.seconds(realtime.batching_window_seconds),
            # As many invocations as the limit and the calls' latency need (Little's law).
            max_concurrency=realtime.event_source_concurrency(),
            report_batch_item_failures=True,
        )
        # Not SqsEventSource: it would also grant sqs:GetQueueUrl, which nothing here calls.
        queue.grant(self.function, *EVENT_SOURCE_ACTIONS)

    @property
    def role(self) -> iam.IRole:
        role = self.function.role
        assert role is not None
        return role
