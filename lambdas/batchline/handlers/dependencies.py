"""Builds the adapters a handler needs from its environment, once per cold start."""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger

from batchline.adapters.job_store import JobStore
from batchline.adapters.openai_batches import OpenAIBatches
from batchline.adapters.s3_objects import S3Objects
from batchline.settings import RuntimeEnvironment, runtime_environment

logger = Logger(service="batchline")


def environment() -> RuntimeEnvironment:
    return runtime_environment()


@cache
def job_store() -> JobStore:
    return JobStore(environment().table_name)


def objects(bucket: str) -> S3Objects:
    return S3Objects(bucket, part_bytes=environment().settings.upload_part_bytes)


def output_objects() -> S3Objects:
    return objects(environment().output_bucket)


@cache
def openai_batches() -> OpenAIBatches:
    env = environment()
    return OpenAIBatches(api_key=env.openai_api_key, base_url=env.openai_base_url)


def reset() -> None:
    """Forget every cached client and setting (tests and the local run change the environment)."""
    from batchline.adapters.job_store import dynamodb_resource
    from batchline.adapters.s3_objects import s3_client

    for cached in (job_store, openai_batches, runtime_environment, dynamodb_resource, s3_client):
        cached.cache_clear()
