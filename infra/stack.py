"""The batchline stack: composes one construct per concern and grants what crosses between them.

Every permission a function holds is granted here, next to the handler behaviour that needs it.
The hot path (queue + worker) will be one more construct composed the same way.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from batchline.domain.layout import STAGING_PREFIX
from batchline.settings import Settings, runtime_environment_variables
from constructs import Construct

from infra.constants import (
    LAMBDAS_DIR,
    LAYER_ENCODINGS_DIR,
    OPENAI_CALLERS,
    SECRET_ARN_ENV,
    SERVICE_NAME,
    STAGING_RETENTION_DAYS,
)
from infra.functions import ColdPathFunctions
from infra.lambda_layer import DependenciesLayer
from infra.observability import ColdPathMonitoring
from infra.orchestration import ColdPathOrchestration
from infra.secrets import OpenAIKeySecret
from infra.storage import Storage


class BatchlineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **stack_props: Any) -> None:
        super().__init__(scope, construct_id, **stack_props)

        storage = Storage(
            self,
            "Storage",
            output_prefix=settings.output_prefix,
            staging_prefix=STAGING_PREFIX,
            staging_retention=Duration.days(STAGING_RETENTION_DAYS),
        )
        api_key = OpenAIKeySecret(self, "OpenAIApiKey")
        dependencies = DependenciesLayer(self, "Dependencies")
        environment = {
            **runtime_environment_variables(
                settings, table_name=storage.table.table_name, output_bucket=storage.output_bucket.bucket_name
            ),
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "TIKTOKEN_CACHE_DIR": LAYER_ENCODINGS_DIR,
            SECRET_ARN_ENV: api_key.secret_arn,
        }
        functions = ColdPathFunctions(
            self,
            "Functions",
            code_dir=str(LAMBDAS_DIR),
            layer=dependencies.layer,
            sizing=settings.functions,
            environment=environment,
        )
        self._grant_function_access(storage, api_key, functions)

        orchestration = ColdPathOrchestration(
            self,
            "Orchestration",
            functions=functions.functions,
            input_bucket=storage.input_bucket,
            map_max_concurrency=settings.map_max_concurrency,
            poll_seconds=settings.poll_seconds,
        )
        monitoring = ColdPathMonitoring(
            self,
            "Monitoring",
            state_machine=orchestration.state_machine,
            functions=functions.functions,
            table=storage.table,
        )

        outputs = {
            "InputBucketName": (storage.input_bucket.bucket_name, "Upload a JSONL file here to start a job."),
            "OutputBucketName": (storage.output_bucket.bucket_name, "Results, errors and summary of each job."),
            "JobTableName": (storage.table.table_name, "One item per job and per shard."),
            "StateMachineArn": (orchestration.state_machine.state_machine_arn, "The cold path's state machine."),
            "OpenAIApiKeySecretArn": (api_key.secret_arn, "Put the OpenAI API key here after deploy."),
            "DashboardName": (monitoring.dashboard.dashboard_name, "CloudWatch dashboard of the cold path."),
            "AlarmTopicArn": (monitoring.alarm_topic.topic_arn, "Subscribe here to hear of failed jobs."),
        }
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)

    @staticmethod
    def _grant_function_access(storage: Storage, api_key: OpenAIKeySecret, functions: ColdPathFunctions) -> None:
        """Each role gets what its handler does, read from lambdas/batchline/handlers/*.py."""
        role = functions.role

        # plan: streams the input (Head/GetObject), writes shard files and invalid lines to staging
        # (Put + multipart, abort on failure), creates the job and its shards.
        storage.grant_read_input(role("plan"))
        storage.grant_write_staging(role("plan"))
        storage.grant_table(role("plan"), ["PutItem", "UpdateItem", "BatchWriteItem"])

        # submit: downloads the shard's requests file, reads and updates the shard record.
        storage.grant_read_staging(role("submit"))
        storage.grant_table(role("submit"), ["GetItem", "UpdateItem"])

        # check: records the batch's status on the shard.
        storage.grant_table(role("check"), ["UpdateItem"])

        # collect: reads the manifest, writes the shard's results and errors, records the tally.
        storage.grant_read_staging(role("collect"))
        storage.grant_write_staging(role("collect"))
        storage.grant_table(role("collect"), ["UpdateItem"])

        # shard_failed: records why a shard stopped.
        storage.grant_table(role("shard_failed"), ["UpdateItem"])

        # finalize: may head the input to derive the job id, merges staging files (and checks whether
        # invalid.jsonl exists), writes the job's results, errors and summary, reads and updates the job.
        storage.grant_read_input(role("finalize"))
        storage.grant_read_staging(role("finalize"))
        storage.grant_probe_output(role("finalize"))
        storage.grant_write_results(role("finalize"))
        storage.grant_table(role("finalize"), ["GetItem", "Query", "UpdateItem"])

        for name in sorted(OPENAI_CALLERS):
            api_key.grant_read(role(name))
