"""The batchline stack: composes one construct per concern and grants what crosses between them.

Every permission a handler uses is granted here, next to the handler behaviour that needs it (the
worker's event source mapping grants its own polling, in ``hot_path``). The realtime queue comes
before the functions, because every function's environment names it.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from batchline.domain.layout import STAGING_PREFIX
from batchline.settings import Settings, runtime_environment_variables
from batchline.topology import METRICS_NAMESPACE
from constructs import Construct

from infra.constants import (
    LAMBDAS_DIR,
    LAYER_ENCODINGS_DIR,
    OPENAI_CALLERS,
    REALTIME_BODIES,
    REALTIME_MERGED,
    REALTIME_OUTCOMES,
    SECRET_ARN_ENV,
    SERVICE_NAME,
    SHARD_FILES,
)
from infra.encryption import DataKey
from infra.functions import JobFunctions, function_code
from infra.hot_path import RealtimeQueue, RealtimeWorker
from infra.lambda_layer import DependenciesLayer
from infra.observability import Monitoring
from infra.orchestration import JobOrchestration
from infra.secrets import OpenAIKeySecret
from infra.storage import Storage


class BatchlineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **stack_props: Any) -> None:
        super().__init__(scope, construct_id, **stack_props)

        key = DataKey(self, "DataKey", encryption=settings.encryption)
        storage = Storage(
            self,
            "Storage",
            output_prefix=settings.output_prefix,
            staging_prefix=STAGING_PREFIX,
            retention=settings.retention,
            key=key,
        )
        api_key = OpenAIKeySecret(self, "OpenAIApiKey")
        dependencies = DependenciesLayer(self, "Dependencies")
        queue = RealtimeQueue(
            self,
            "RealtimeQueue",
            realtime=settings.realtime,
            dead_letter_days=settings.retention.dead_letter_days,
            key=key,
        )
        environment = {
            **runtime_environment_variables(
                settings,
                table_name=storage.table.table_name,
                output_bucket=storage.output_bucket.bucket_name,
                queue_url=queue.queue.queue_url,
            ),
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "TIKTOKEN_CACHE_DIR": LAYER_ENCODINGS_DIR,
            SECRET_ARN_ENV: api_key.secret_arn,
        }
        code = function_code(str(LAMBDAS_DIR))
        functions = JobFunctions(
            self,
            "Functions",
            code=code,
            layer=dependencies.layer,
            sizing=settings.functions,
            environment=environment,
            log_days=settings.retention.log_days,
        )
        worker = RealtimeWorker(
            self,
            "RealtimeWorker",
            queue=queue,
            realtime=settings.realtime,
            code=code,
            layer=dependencies.layer,
            environment=environment,
            memory_mb=settings.realtime.worker_memory_mb,
            log_days=settings.retention.log_days,
        )
        roles = {name: functions.role(name) for name in functions.functions} | {"worker": worker.role}
        self._grant_function_access(storage, api_key, queue, roles)

        orchestration = JobOrchestration(
            self,
            "Orchestration",
            functions=functions.functions,
            input_bucket=storage.input_bucket,
            map_max_concurrency=settings.map_max_concurrency,
            poll_seconds=settings.poll_seconds,
            log_days=settings.retention.log_days,
        )
        monitoring = Monitoring(
            self,
            "Monitoring",
            state_machine=orchestration.state_machine,
            functions=functions.functions,
            worker=worker.function,
            queue=queue.queue,
            dead_letter_queue=queue.dead_letter_queue,
            table=storage.table,
            key=key,
        )

        outputs = {
            "InputBucketName": (storage.input_bucket.bucket_name, "Upload a JSONL file here to start a job."),
            "OutputBucketName": (storage.output_bucket.bucket_name, "Results, errors and summary of each job."),
            "JobTableName": (storage.table.table_name, "One item per job, per shard and per realtime outcome."),
            "StateMachineArn": (orchestration.state_machine.state_machine_arn, "The job state machine."),
            "QueueUrl": (queue.queue.queue_url, "The realtime requests the worker drains."),
            "DeadLetterQueueUrl": (
                queue.dead_letter_queue.queue_url,
                "Realtime requests that failed every delivery; look, fix, then redrive.",
            ),
            "OpenAIApiKeySecretArn": (api_key.secret_arn, "Put the OpenAI API key here after deploy."),
            "DashboardName": (monitoring.dashboard.dashboard_name, "CloudWatch dashboard of jobs and the queue."),
            "AlarmTopicArn": (
                monitoring.alarm_topic.topic_arn,
                "Subscribe here to hear of failed jobs, dead letters, budget thresholds and stuck batches.",
            ),
        }
        if key.key is not None:
            outputs["DataKeyArn"] = (
                key.key.key_arn,
                "The KMS key of the buckets, table, queues and topic: who uploads needs kms:GenerateDataKey on it, "
                "who reads results kms:Decrypt.",
            )
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)

    @staticmethod
    def _grant_function_access(
        storage: Storage, api_key: OpenAIKeySecret, queue: RealtimeQueue, roles: dict[str, iam.IRole]
    ) -> None:
        """Each role gets what its handler does, read from lambdas/batchline/handlers/*.py."""
        # plan: hashes and streams the input (Head/GetObject), writes shard files and invalid lines to
        # staging (Put + multipart, abort on failure), creates the job and its shards, or reads them
        # back to resume (GetItem, Query); holds the budget (a transaction of Updates).
        storage.grant_read_input(roles["plan"])
        storage.grant_write_staging(roles["plan"])
        storage.grant_table(roles["plan"], ["GetItem", "PutItem", "UpdateItem", "BatchWriteItem", "Query"])

        # submit and check run the batch route's poll loop (batchline.workflow.shard_loop), both over
        # every shard of the job (Query): submitting downloads a round's requests file (rewritten in
        # staging for a fallback model), reads the job, the shard and the budget, reserves budget and
        # queue room (transactions that put ticket items), claims the shard and records the batch;
        # collecting reads the manifest and the round's requests, writes the round's results, errors
        # and the next round's files, settles the budget ticket and releases the queue ticket
        # (DeleteItem). Either may send a round's last few requests to the realtime queue (spilled
        # bodies, SQS), count a shard's failed attempts and fail it, and read the job's realtime counters.
        for name in ("submit", "check"):
            storage.grant_read_staging(roles[name])
            storage.grant_write_staging(roles[name])
            storage.grant_table(roles[name], ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"])
            queue.grant(roles[name], "sqs:SendMessage")

        # enqueue: reads the shard's requests and manifest, puts a body too big for SQS in S3 (one
        # PutObject), sends the messages in batches (SendMessageBatch is authorised as SendMessage),
        # marks the shard enqueued and touches the job.
        storage.grant_read_staging(
            roles["enqueue"], SHARD_FILES, what="A shard's requests.jsonl and manifest.tsv, read to build its messages"
        )
        storage.grant_put_staging(
            roles["enqueue"], REALTIME_BODIES, what="Request bodies too large for an SQS message, one object per line"
        )
        queue.grant(roles["enqueue"], "sqs:SendMessage")
        # It skips the lines a resumed job has answered already (BatchGetItem of the answered blocks).
        storage.grant_table(roles["enqueue"], ["UpdateItem", "BatchGetItem"])

        # realtime_progress: reads the job's counters, keeps the poll credit a local run bills by.
        storage.grant_table(roles["realtime_progress"], ["GetItem", "UpdateItem"])

        # finalize: may head the input to derive the job id, merges staging files (and checks whether
        # invalid.jsonl exists), joins the realtime outcomes (Query) into two staging files, writes the
        # job's results, errors and summary, reads and updates the job.
        storage.grant_read_input(roles["finalize"])
        storage.grant_read_staging(roles["finalize"])
        for merged in REALTIME_MERGED:
            storage.grant_write_staging(
                roles["finalize"], merged, what="A realtime job's outcomes joined to every planned line, as one file"
            )
        storage.grant_probe_output(roles["finalize"])
        storage.grant_write_results(roles["finalize"])
        storage.grant_table(roles["finalize"], ["GetItem", "Query", "UpdateItem"])

        # worker: reads a spilled body, writes each invocation's outcome records as one object;
        # reads which lines are answered (BatchGetItem), the job (GetItem, UpdateItem to halt it),
        # the budget (a transaction of Updates), the rate-limit bucket and circuit items (GetItem,
        # UpdateItem), and records the answered lines with the job's counters in one transaction of
        # Updates; it hands a failing message back with ChangeMessageVisibility, and requeues one that
        # only waited for room with SendMessage (so waiting never uses up its deliveries). Its polling
        # is granted with its event source.
        storage.grant_read_staging(
            roles["worker"],
            REALTIME_BODIES,
            what="Request bodies too large for an SQS message, read back by the worker",
        )
        storage.grant_put_staging(
            roles["worker"],
            REALTIME_OUTCOMES,
            what="Outcome records of the realtime requests, one JSON Lines object per invocation",
        )
        storage.grant_table(roles["worker"], ["GetItem", "UpdateItem", "BatchGetItem"])
        queue.grant(roles["worker"], "sqs:ChangeMessageVisibility", "sqs:SendMessage")

        for name in sorted(OPENAI_CALLERS):
            api_key.grant_read(roles[name])
