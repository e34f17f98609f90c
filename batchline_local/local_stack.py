"""The whole AWS side on this machine: moto as a server, with resources built from the settings.

The buckets, table, functions, state machine and object-created trigger are created from the
same settings module and topology the CDK stack reads, so a local run exercises the deployed
wiring: an upload to the input bucket starts the execution through an EventBridge rule.
``LocalAws.crashes`` makes chosen invocations of the functions crash, to test resumption. With a
``state_dir``, the table and the output bucket are kept on disk (see durable_state): a stack
started again on that directory finds every job as the last one left it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import boto3
from batchline import wiring
from batchline.domain.answer_cache import CACHE_METADATA_KEY
from batchline.domain.budget import BUDGET_METADATA_KEY
from batchline.domain.routing import METADATA_KEY
from batchline.settings import METER_CLOCK_ENV, Settings, runtime_environment_variables
from batchline.topology import (
    EXECUTION_INPUT_PATHS,
    FUNCTIONS,
    WORKER,
    asl_substitutions,
    execution_input_template,
    job_table_definition,
    object_created_pattern,
    render_asl,
)
from botocore.config import Config
from moto.server import ThreadedMotoServer

from batchline_cli.stack_target import StackTarget
from batchline_local import crashes, moto_patches
from batchline_local.crashes import CrashInjector
from batchline_local.durable_state import DurableState
from batchline_local.event_source import SqsEventSource

LOCAL_ACCOUNT = "123456789012"


def function_name(name: str) -> str:
    """The local function's name for a topology name ("submit" -> "batchline-submit")."""
    return f"batchline-{name}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalAws:
    """moto in this process, set up like the deployed stack. Use as a context manager.

    ``crashes`` arms crashes of the functions by topology name, e.g.
    ``aws.crashes.arm("submit", at_call=1, when="after")``; like moto's account, the armed crashes
    and the call counts start empty at every ``start()``, so arm them once the stack is up.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        openai_base_url: str,
        openai_api_key: str,
        poll_seconds: int,
        port: int | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.poll_seconds = poll_seconds
        self._openai = {"OPENAI_BASE_URL": openai_base_url, "OPENAI_API_KEY": openai_api_key}
        self.port = port or free_port()  # a chosen port: `batchline local up --port`
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._saved_env: dict[str, str | None] = {}
        self.state_machine_arn = ""
        self.queue_url = ""
        self.dead_letter_queue_url = ""
        self._event_source: SqsEventSource | None = None
        self.crashes = CrashInjector(spec.name for spec in (*FUNCTIONS, WORKER))
        self.state_dir = state_dir
        self.restored: dict[str, int] = {}
        self._durable: DurableState | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        moto_patches.install()
        moto_patches.clear_ended_invocations()
        moto_patches.on_environment_change(wiring.reset)
        self._server.start()
        self._set_env(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "MOTO_PORT": str(self.port),
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_SESSION_TOKEN": "local",
                "AWS_DEFAULT_REGION": self.settings.region,
                "AWS_REGION": self.settings.region,
                "POWERTOOLS_SERVICE_NAME": "batchline",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                # Functions here share the cores with moto and the emulator: meter their own CPU.
                METER_CLOCK_ENV: "cpu",
                # CloudWatch metrics have no CloudWatch here: keep their records off the terminal.
                "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "true"),
            }
        )
        wiring.reset()
        # moto's backends live in the process: start every run from an empty account.
        self._post("/moto-api/reset", {})
        self.crashes.clear()
        crashes.register(self.crashes, {function_name(spec.name): spec.name for spec in (*FUNCTIONS, WORKER)})
        config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
        self._post("/moto-api/config", config)
        self._create_resources()
        if self.state_dir is not None:
            self._durable = DurableState(self.state_dir, table=self.names.table, buckets=[self.names.output_bucket])
            self.restored = self._durable.restore_and_attach(LOCAL_ACCOUNT, self.settings.region)

    def _post(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    @property
    def visibility_timeout_seconds(self) -> int:
        """Six times the worker's timeout, as AWS advises for an SQS event source."""
        return 6 * self.settings.realtime.worker_timeout_seconds

    @property
    def event_source(self) -> SqsEventSource | None:
        return self._event_source

    def stop_sending(self, timeout: float) -> bool:
        """Stop the realtime workers: no new delivery, and the invocations under way start no new
        call (they wind up as at their timeout, handing back what they hold). Waits up to `timeout`
        seconds for them; True when all ended. Nothing else of the stack stops."""
        moto_patches.end_invocations(function_name(WORKER.name))
        return self._event_source is None or self._event_source.stop(timeout=timeout)

    def stop(self) -> None:
        if self._event_source is not None:
            self._event_source.stop()
        if self._durable is not None:
            self._durable.detach()
            self._durable = None
        crashes.unregister(self.crashes)
        self._server.stop()
        moto_patches.restore_environment()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        wiring.reset()

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    # -- clients -----------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.settings.region)

    def target(self) -> StackTarget:
        """This stack as the job commands reach it (to cancel a job, read its progress)."""
        return StackTarget(
            label=f"the local stack at {self.endpoint}",
            input_bucket=self.names.input_bucket,
            output_bucket=self.names.output_bucket,
            table=self.names.table,
            state_machine_arn=self.state_machine_arn,
            output_prefix=self.settings.output_prefix,
            region=self.settings.region,
            endpoint_url=self.endpoint,
            openai_base_url=self._openai["OPENAI_BASE_URL"],
            openai_api_key=self._openai["OPENAI_API_KEY"],
        )

    # -- resources ---------------------------------------------------------------------------
    def _create_resources(self) -> None:
        s3 = self.client("s3")
        for bucket in (self.names.input_bucket, self.names.output_bucket):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_notification_configuration(
            Bucket=self.names.input_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        self.client("dynamodb").create_table(**job_table_definition(self.names.table))
        sqs = self.client("sqs")
        realtime = self.settings.realtime
        dlq_url = sqs.create_queue(QueueName=self.names.dead_letter_queue)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queue_url = sqs.create_queue(
            QueueName=self.names.queue,
            Attributes={
                "VisibilityTimeout": str(self.visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(realtime.max_receive_count)}
                ),
            },
        )["QueueUrl"]
        self.dead_letter_queue_url = dlq_url
        role_arn = self.client("iam").create_role(
            RoleName="batchline-local",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        environment = {
            **runtime_environment_variables(
                self.settings,
                table_name=self.names.table,
                output_bucket=self.names.output_bucket,
                queue_url=self.queue_url,
            ),
            **self._openai,
            "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR", ""),
        }
        lambda_client = self.client("lambda")
        arns = {}
        for spec in (*FUNCTIONS, WORKER):
            arns[spec.name] = lambda_client.create_function(
                FunctionName=function_name(spec.name),
                Runtime="python3.12",
                Role=role_arn,
                Handler=spec.handler,
                Code={"ZipFile": _placeholder_zip()},
                Timeout=realtime.worker_timeout_seconds if spec is WORKER else self.settings.functions.timeout_seconds,
                MemorySize=realtime.worker_memory_mb if spec is WORKER else self.settings.functions.memory_mb,
                Environment={"Variables": environment},
            )["FunctionArn"]
        # The invoke runs the worker in this process: wait as long as its timeout, never retry it
        # (a retried invoke would work the same messages twice at once).
        invoke_config = Config(read_timeout=realtime.worker_timeout_seconds + 30, retries={"max_attempts": 1})
        self._event_source = SqsEventSource(
            sqs=self.client("sqs"),
            lambda_client=boto3.client(
                "lambda", endpoint_url=self.endpoint, region_name=self.settings.region, config=invoke_config
            ),
            queue_url=self.queue_url,
            function_name=function_name(WORKER.name),
            batch_size=realtime.batch_size,
            batching_window_seconds=realtime.batching_window_seconds,
            max_concurrency=realtime.event_source_concurrency(),
            region=self.settings.region,
        ).start()
        definition = render_asl(asl_substitutions(arns, self.settings.map_max_concurrency))
        sfn = self.client("stepfunctions")
        self.state_machine_arn = sfn.create_state_machine(
            name=self.names.state_machine, definition=definition, roleArn=role_arn
        )["stateMachineArn"]
        events = self.client("events")
        events.put_rule(
            Name=self.names.event_rule, EventPattern=json.dumps(object_created_pattern(self.names.input_bucket))
        )
        events.put_targets(
            Rule=self.names.event_rule,
            Targets=[
                {
                    "Id": "start-job",
                    "Arn": self.state_machine_arn,
                    "RoleArn": role_arn,
                    "InputTransformer": {
                        "InputPathsMap": EXECUTION_INPUT_PATHS,
                        "InputTemplate": execution_input_template(self.poll_seconds),
                    },
                }
            ],
        )

    # -- use ---------------------------------------------------------------------------------
    def upload_input(
        self,
        path: str,
        key: str,
        *,
        mode: str | None = None,
        budget_usd: float | None = None,
        spec: tuple[str, bytes] | None = None,
        cache: bool = True,
    ) -> str:
        """Drop a file in the input bucket (the trigger starts the job); return the job's id.

        `mode` and `budget_usd` travel as the object's ``batchline-mode`` and ``batchline-budget-usd``
        metadata, as a user would set them, and `cache=False` as ``batchline-cache: off``;
        `spec`, a table job's (digest, JSON), is put beside it.
        """
        from batchline_cli.jobs_client import file_job_id, put_spec

        s3 = self.client("s3")
        metadata = {METADATA_KEY: mode} if mode else {}
        if budget_usd is not None:
            metadata[BUDGET_METADATA_KEY] = repr(float(budget_usd))
        if not cache:
            metadata[CACHE_METADATA_KEY] = "off"
        if spec is not None:
            metadata |= put_spec(s3, self.names.input_bucket, spec[1], spec[0])
        s3.upload_file(path, self.names.input_bucket, key, ExtraArgs={"Metadata": metadata} if metadata else None)
        return file_job_id(Path(path), key, spec_digest=spec[0] if spec else None)

    def executions(self) -> list[dict]:
        return self.client("stepfunctions").list_executions(stateMachineArn=self.state_machine_arn)["executions"]

    def wait_for_execution(self, *, timeout: float) -> dict:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.executions()
            if found:
                return sfn.describe_execution(executionArn=found[0]["executionArn"])
            time.sleep(0.05)
        raise TimeoutError("the upload did not start an execution: is the object-created trigger wired?")

    def describe(self, execution_arn: str) -> dict:
        return self.client("stepfunctions").describe_execution(executionArn=execution_arn)

    def job_execution(self, execution_arn: str) -> dict:
        """The description of the execution that runs the job now: the one given, or the last it handed over to.

        A job polled for longer than one execution's history allows is taken over by a new
        execution (the state machine's HandOver state); it names its predecessor in its input.
        """
        described = self.describe(execution_arn)
        while described["status"] == "SUCCEEDED" and json.loads(described.get("output") or "{}").get(
            "progress", {}
        ).get("hand_over"):
            successor = next(
                (
                    execution["executionArn"]
                    for execution in self.executions()
                    if json.loads(self.describe(execution["executionArn"]).get("input") or "{}").get("handover_from")
                    == described["executionArn"]
                ),
                None,
            )
            if successor is None:
                return {**described, "status": "RUNNING"}  # handed over; the next one is starting
            described = self.describe(successor)
        return described

    def history(self, execution_arn: str) -> list[dict]:
        return self.client("stepfunctions").get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]

    def read_output(self, key: str) -> bytes:
        return self.client("s3").get_object(Bucket=self.names.output_bucket, Key=key)["Body"].read()

    def download_output(self, key: str, path: str) -> None:
        self.client("s3").download_file(self.names.output_bucket, key, path)


def _placeholder_zip() -> bytes:
    """moto wants a code package; the handlers run from this process's own lambdas/ package."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "batchline runs its handlers in-process in a local run")
    return buffer.getvalue()
