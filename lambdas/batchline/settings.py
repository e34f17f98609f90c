"""Every limit, name and default of batchline, typed and validated in one place.

Read by the CDK constructs (from the ``batchline`` key of cdk.json's context), by the local run
(from the same file) and by the Lambda functions (from the ``BATCHLINE_SETTINGS`` environment
variable that both of those write). A wrong value fails at the edge with a message naming it;
the domain receives plain, already-valid values and never reads the environment itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchline.domain.pricing import DEFAULT_PRICES, ModelPrice, PriceBook

# Hard limits of the OpenAI Batch API (see shared/reference/openai-batch-api.md).
OPENAI_MAX_REQUESTS_PER_FILE = 50_000
OPENAI_MAX_BYTES_PER_FILE = 209_715_200
BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/completions",
    "/v1/moderations",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResourceNames(_Frozen):
    """Names the local run gives its resources; the deployed stack lets CloudFormation name them."""

    input_bucket: str = "batchline-input"
    output_bucket: str = "batchline-output"
    table: str = "batchline-jobs"
    state_machine: str = "batchline-cold-path"
    event_rule: str = "batchline-input-object-created"


class FunctionSizing(_Frozen):
    memory_mb: int = Field(1024, ge=128, le=10240)
    timeout_seconds: int = Field(900, ge=10, le=900)
    ephemeral_storage_mb: int = Field(2048, ge=512, le=10240)


class EmulatorSettings(_Frozen):
    """Pace of the built-in OpenAI emulator. Fast by default so that local runs and tests are quick."""

    validating_seconds: float = Field(0.0, ge=0)
    in_progress_seconds: float = Field(0.2, ge=0)
    finalizing_seconds: float = Field(0.0, ge=0)
    realtime_latency_seconds: float = Field(0.0, ge=0)


class Settings(_Frozen):
    shard_max_requests: int = Field(OPENAI_MAX_REQUESTS_PER_FILE, ge=1, le=OPENAI_MAX_REQUESTS_PER_FILE)
    shard_max_bytes: int = Field(OPENAI_MAX_BYTES_PER_FILE, ge=1024, le=OPENAI_MAX_BYTES_PER_FILE)
    map_max_concurrency: int = Field(10, ge=1, le=40, description="shards worked on at once")
    poll_seconds: int = Field(60, ge=1, le=3600, description="wait between two checks of a batch")
    local_poll_seconds: int = Field(1, ge=1, le=60, description="the same wait in a local run")
    completion_window: Literal["24h"] = "24h"
    assumed_output_tokens: int = Field(
        256, ge=0, description="output tokens assumed for a request that sets no max_tokens"
    )
    batch_discount: float = Field(0.5, gt=0, le=1)
    pricing: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    upload_part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    output_prefix: str = Field("jobs", min_length=1)
    region: str = "us-east-1"
    names: ResourceNames = ResourceNames()
    functions: FunctionSizing = FunctionSizing()
    emulator: EmulatorSettings = EmulatorSettings()

    def price_book(self) -> PriceBook:
        return PriceBook(self.pricing, self.batch_discount)


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names each offending field."""


def load_settings(values: Mapping[str, Any] | None = None) -> Settings:
    try:
        return Settings.model_validate(dict(values or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid batchline settings: {problems}") from None


def settings_from_cdk_json(path: Path) -> Settings:
    """The settings the stack would deploy with: the ``batchline`` key of cdk.json's context."""
    context = json.loads(path.read_text()).get("context", {})
    return load_settings(context.get("batchline", {}))


class RuntimeEnvironment(_Frozen):
    """What a Lambda function is told by its environment: resource names and the settings blob."""

    table_name: str = Field(min_length=1)
    output_bucket: str = Field(min_length=1)
    settings: Settings
    openai_base_url: str | None = None
    # Deployed functions get the secret's ARN and read the key when they first call OpenAI; a
    # local run passes the key itself. Functions that never call OpenAI need neither.
    openai_api_key: str | None = None
    openai_api_key_secret_arn: str | None = None


SETTINGS_ENV = "BATCHLINE_SETTINGS"
OPENAI_KEY_SECRET_ENV = "OPENAI_API_KEY_SECRET_ARN"
_REQUIRED_ENV = {"table_name": "TABLE_NAME", "output_bucket": "OUTPUT_BUCKET"}


def runtime_environment_variables(settings: Settings, *, table_name: str, output_bucket: str) -> dict[str, str]:
    """The environment both the stack and the local run give every function."""
    return {
        SETTINGS_ENV: settings.model_dump_json(),
        "TABLE_NAME": table_name,
        "OUTPUT_BUCKET": output_bucket,
    }


@cache
def runtime_environment() -> RuntimeEnvironment:
    """Read once per cold start. A missing variable is an error that names it."""
    missing = [var for var in (SETTINGS_ENV, *_REQUIRED_ENV.values()) if not os.environ.get(var)]
    if missing:
        raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
    return RuntimeEnvironment(
        table_name=os.environ["TABLE_NAME"],
        output_bucket=os.environ["OUTPUT_BUCKET"],
        openai_api_key=os.environ.get("OPENAI_API_KEY") or None,
        openai_api_key_secret_arn=os.environ.get(OPENAI_KEY_SECRET_ENV) or None,
        openai_base_url=os.environ.get("OPENAI_BASE_URL") or None,
        settings=load_settings(json.loads(os.environ[SETTINGS_ENV])),
    )
