"""The batch route's AWS on moto, for the handlers' integration tests: the buckets, the job table,
the functions' environment, and the emulator as the provider."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3
from batchline import wiring
from batchline.settings import Settings, runtime_environment_variables
from batchline.topology import job_table_definition
from moto import mock_aws

from batchline_local.emulator import EmulatorServer


@contextlib.contextmanager
def batch_route_stack(monkeypatch, settings: Settings) -> Iterator[dict]:
    """moto with input-files and output-files buckets and a jobs table, the functions' environment for
    `settings`, and an emulator: yields {"s3": client, "emulator": server}."""
    with mock_aws(), EmulatorServer(settings=settings) as emulator:
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name, value in runtime_environment_variables(
            settings, table_name="jobs", output_bucket="output-files", queue_url="not-used-by-the-batch-route"
        ).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        wiring.reset()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="input-files")
        s3.create_bucket(Bucket="output-files")
        boto3.client("dynamodb").create_table(**job_table_definition("jobs"))
        yield {"s3": s3, "emulator": emulator}
        wiring.reset()
