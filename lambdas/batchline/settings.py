"""Every limit, name and default of batchline, typed and validated in one place.

Read by the CDK constructs (from the ``batchline`` key of cdk.json's context), by the local run
(from the same file) and by the Lambda functions (from the ``BATCHLINE_SETTINGS`` environment
variable that both of those write). A wrong value fails at the edge with a message naming it;
the domain receives plain, already-valid values and never reads the environment itself.

Plain values only: nothing here imports the domain. The domain's objects (the price book, the
model table, the validator, the planner) are built from these by `batchline.composition`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchline.catalog import ModelLimits, ModelPrice, find_price
from batchline.price_table import maintained_table

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
    queue: str = "batchline-realtime-requests"
    dead_letter_queue: str = "batchline-realtime-dead-letters"


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
    # Rate limits enforced on the realtime endpoints, per model (see the emulator's ratelimits module).
    # A request costs 1 request and its prompt tokens + max output tokens; 429 when it does not fit.
    requests_per_minute: int = Field(10_000, ge=1)
    tokens_per_minute: int = Field(30_000_000, ge=1)
    # token_bucket, as OpenAI: limits quantized, refilled continuously at limit/60 per second, each
    # bucket holding burst_seconds of that. fixed_window: the per-minute figures are a budget per
    # rate_window_seconds window aligned to the epoch.
    rate_limit_algorithm: Literal["token_bucket", "fixed_window"] = "token_bucket"
    burst_seconds: float = Field(1.0, gt=0, description="token_bucket: the buckets hold this many seconds of refill")
    rate_window_seconds: float = Field(
        60.0, gt=0, description="fixed_window only; shorter than a minute only to make benchmarks quick"
    )
    # Failures on request, e.g. "token_limit=2,expire=0.5,http_429=0.1" (see the emulator's faults module).
    faults: str = ""


class RateLimit(_Frozen):
    requests_per_minute: int = Field(ge=1)
    tokens_per_minute: int = Field(ge=1)


class RealtimeSettings(_Frozen):
    """The hot path: SQS-fed workers calling the realtime API at the provider's limit, never above.

    The limits here are only a first guess: every answer's x-ratelimit-* headers replace them in
    the shared limiter. Until the first answer, a worker sends one request at a time.
    """

    default_limit: RateLimit = RateLimit(requests_per_minute=500, tokens_per_minute=200_000)
    limits: dict[str, RateLimit] = Field(default_factory=dict, description="first guesses per model")
    safety_fraction: float = Field(0.97, gt=0, le=1, description="share of the provider's rate the workers use")
    burst_seconds: float = Field(
        1.0, gt=0, le=60, description="the shared bucket holds this many seconds of the rate (the provider's quantum)"
    )
    batch_size: int = Field(100, ge=1, le=10_000, description="SQS messages per worker invocation")
    batching_window_seconds: int = Field(1, ge=0, le=300, description="how long the event source gathers a batch")
    concurrent_calls: int = Field(32, ge=1, le=256, description="calls in flight within one worker invocation")
    expected_latency_seconds: float = Field(
        1.0, gt=0, description="a call's usual latency: with the limit, it sizes the workers (Little's law)"
    )
    max_concurrency: int | None = Field(
        None, ge=2, le=1000, description="event source maximum concurrency; derived from the limit when unset"
    )
    reserved_concurrency: int = Field(8, ge=2, le=1000)
    max_receive_count: int = Field(5, ge=1, le=1000, description="deliveries before a message goes to the DLQ")
    max_rate_limited_attempts: int = Field(3, ge=1, le=20, description="429s for one request within one invocation")
    # The batch route asks again within its rounds (recovery.max_attempts); this is the realtime route's bound.
    schema_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="answers a request asking for a JSON Schema gets on the realtime route before one that "
        "fails the schema is final (each is billed)",
    )
    backoff_base_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(60.0, gt=0)
    max_pace_wait_seconds: float = Field(
        2.0, gt=0, le=60, description="longest wait for room inside an invocation; longer ones go back to the queue"
    )
    circuit_failure_threshold: int = Field(8, ge=1)
    circuit_cooldown_seconds: float = Field(30.0, gt=0)
    worker_timeout_seconds: int = Field(120, ge=30, le=900)
    worker_memory_mb: int = Field(512, ge=128, le=10240, description="the workers wait on the network, not the CPU")
    stall_seconds: float = Field(900.0, gt=0, description="no progress this long ends the wait; the rest are errors")
    record_every_seconds: float = Field(
        5.0, gt=0, le=900, description="a worker records its answers this often: a dead one leaves only these in doubt"
    )
    resend_in_doubt: bool = Field(
        False,
        description="send again a line whose worker died mid-call (it may have been billed): off, it ends in_doubt",
    )

    def limit_for(self, model: str) -> RateLimit:
        return self.limits.get(model, self.default_limit)

    def highest_limit(self) -> RateLimit:
        return max((self.default_limit, *self.limits.values()), key=lambda limit: limit.requests_per_minute)

    def event_source_concurrency(self) -> int:
        """Invocations at once: the calls in flight at the limit (Little's law), over the calls each makes.

        Requests in flight = rate x latency; one more invocation keeps the pipe full while another
        records its answers. The event source's floor is 2; the reserve caps it.
        """
        if self.max_concurrency is not None:
            return self.max_concurrency
        per_second = self.safety_fraction * self.highest_limit().requests_per_minute / 60
        in_flight = per_second * self.expected_latency_seconds
        return max(2, min(self.reserved_concurrency, math.ceil(in_flight / self.concurrent_calls) + 1))

    @model_validator(mode="after")
    def _event_source_fits_in_reserved_concurrency(self) -> RealtimeSettings:
        # Invocations throttled by the reserve would count as receives and push messages to the DLQ.
        if self.event_source_concurrency() > self.reserved_concurrency:
            raise ValueError(
                f"max_concurrency ({self.max_concurrency}) exceeds reserved_concurrency ({self.reserved_concurrency})"
            )
        return self


class RecoverySettings(_Frozen):
    """What the cold path does when a batch or a request fails in a way worth another try."""

    max_attempts: int = Field(
        3, ge=1, le=10, description="rounds a request gets on the batch route (batch_expired, 5xx, 429, ...)"
    )
    realtime_below_requests: int = Field(
        0, ge=0, description="a round of at most this many requests goes to the realtime path instead of a batch"
    )
    stuck_after_seconds: int = Field(
        6 * 3600, ge=1, description="a batch validating or finalizing this long is cancelled and its rest resubmitted"
    )
    step_attempts: int = Field(
        5, ge=1, le=50, description="polls in a row a shard's step may fail transiently (5xx, timeouts) before it fails"
    )


class BatchQueueSettings(_Frozen):
    """The organisation's enqueued-token limit of the Batch API, per model: prompt tokens of batches in flight."""

    default_tokens: int = Field(20_000_000, ge=1)
    tokens: dict[str, int] = Field(default_factory=dict)

    def limit_for(self, model: str) -> int:
        return self.tokens.get(model, self.default_tokens)


class BudgetSettings(_Frozen):
    """Spend caps in US dollars. A job's own cap may also come with the upload (metadata batchline-budget-usd)."""

    job_usd: float | None = Field(None, gt=0, description="default cap per job; none means no job cap")
    monthly_usd: float | None = Field(None, gt=0, description="cap per calendar month (UTC) over all jobs")
    fallback_threshold: float = Field(0.8, gt=0, le=1, description="past this share, use the fallback models")
    stop_threshold: float = Field(1.0, gt=0, le=1, description="past this share, send nothing more and pause")
    fallback_models: dict[str, str] = Field(
        default_factory=dict, description="model -> cheaper model used past the first threshold"
    )

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> BudgetSettings:
        if self.fallback_threshold > self.stop_threshold:
            raise ValueError(
                f"fallback_threshold ({self.fallback_threshold}) exceeds stop_threshold ({self.stop_threshold})"
            )
        return self


# The retention periods CloudWatch Logs accepts, in days.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


class RetentionSettings(_Frozen):
    """How long the deployed stack keeps what it does not need for long."""

    staging_days: int = Field(
        14, ge=2, le=3650, description="working files (shards, rounds); long enough to resume a job"
    )
    log_days: int = Field(30, description="the functions' and the state machine's logs")
    dead_letter_days: int = Field(14, ge=1, le=14, description="realtime messages that failed every delivery")
    # The buckets are versioned, so that an overwritten or deleted object can be had back for a while.
    noncurrent_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="old versions in the input and output buckets: an upload replaced or deleted, a resumed "
        "job's earlier results; the current results are never expired",
    )
    input_days: int | None = Field(
        None,
        ge=1,
        le=3650,
        description="uploads themselves, counted from the upload; none keeps them until deleted (the default: "
        "an upload is the user's data, and a job's id is made from it)",
    )
    incomplete_upload_days: int = Field(
        1, ge=1, le=365, description="a multipart upload left open (a killed function, a dropped upload) is aborted"
    )

    @model_validator(mode="after")
    def _inputs_outlive_working_files(self) -> RetentionSettings:
        # A job can be resumed while its working files last; its input must last as long.
        if self.input_days is not None and self.input_days < self.staging_days:
            raise ValueError(
                f"input_days ({self.input_days}) is below staging_days ({self.staging_days}): "
                "a job could still be resumed after its input expired"
            )
        return self

    @model_validator(mode="after")
    def _log_days_cloudwatch_accepts(self) -> RetentionSettings:
        if self.log_days not in LOG_RETENTION_DAYS:
            periods = ", ".join(map(str, LOG_RETENTION_DAYS))
            raise ValueError(f"log_days ({self.log_days}) must be one of CloudWatch's periods: {periods}")
        return self


# A KMS key's ARN (not an alias: grants and key policies name the key itself), single- or multi-Region.
KMS_KEY_ARN_PATTERN = (
    r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:key/"
    r"(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


class EncryptionSettings(_Frozen):
    """Encryption at rest of the buckets, the table, the queues and the alarm topic.

    By default AWS's own keys: S3-managed for the buckets, AWS-owned for the table, the queues and
    the topic. With a customer-managed KMS key (created by the stack, or an existing one by its ARN)
    all of them use it, and each role may use it only as far as its handler touches them.
    """

    create_kms_key: bool = Field(False, description="the stack creates one key (rotated yearly, kept on delete)")
    kms_key_arn: str | None = Field(None, description="an existing key in the stack's region, by its ARN")

    @field_validator("kms_key_arn")
    @classmethod
    def _a_key_arn(cls, value: str | None) -> str | None:
        if value is not None and not re.match(KMS_KEY_ARN_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key id>; an alias will not do)"
            )
        return value

    @model_validator(mode="after")
    def _one_key(self) -> EncryptionSettings:
        if self.create_kms_key and self.kms_key_arn:
            raise ValueError("create_kms_key and kms_key_arn exclude each other: create a key, or name one")
        return self

    @property
    def customer_managed(self) -> bool:
        return self.create_kms_key or self.kms_key_arn is not None

    def key_region(self) -> str | None:
        match = re.match(KMS_KEY_ARN_PATTERN, self.kms_key_arn or "")
        return match["region"] if match else None


class Settings(_Frozen):
    default_mode: Literal["batch", "realtime", "auto"] = "batch"
    auto_realtime_max_requests: int = Field(2_000, ge=0, description="auto mode: realtime up to this many requests")
    realtime: RealtimeSettings = RealtimeSettings()
    shard_max_requests: int = Field(OPENAI_MAX_REQUESTS_PER_FILE, ge=1, le=OPENAI_MAX_REQUESTS_PER_FILE)
    shard_max_bytes: int = Field(OPENAI_MAX_BYTES_PER_FILE, ge=1024, le=OPENAI_MAX_BYTES_PER_FILE)
    map_max_concurrency: int = Field(
        10, ge=1, le=40, description="batches a job keeps in flight at once; shards the realtime route enqueues at once"
    )
    poll_seconds: int = Field(60, ge=1, le=3600, description="wait between two checks of a batch")
    max_polls_per_execution: int = Field(
        2000, ge=2, le=2500, description="polls before a new execution takes the job over (25,000-event history)"
    )
    max_poll_seconds: int = Field(
        1800, ge=1, le=86400, description="longest wait between two checks, as a long batch's progress allows"
    )
    local_poll_seconds: int = Field(1, ge=1, le=60, description="the same wait in a local run")
    cache: bool = Field(
        True,
        description="answer a request asked before (the same url and body, in any job) from the job table instead "
        "of sending it, send a request repeated in one file once, and keep every new answer; false turns it off "
        "for every job (one job: upload it with the metadata batchline-cache: off, the command line's --no-cache)",
    )
    completion_window: Literal["24h"] = "24h"
    assumed_output_tokens: int = Field(
        256, ge=0, description="output tokens assumed for a request that sets no max_tokens"
    )
    batch_discount: float = Field(
        0.5, gt=0, le=1, description="batch price / realtime price where a price gives no batch rate (OpenAI: 0.5)"
    )
    pricing: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per million tokens of models the maintained table (genai-prices) lacks, or overriding "
        "it; a key prices that model, its dated snapshots, and for 'ft:<base>' that base's fine-tunes",
    )
    model_limits: dict[str, ModelLimits] = Field(
        default_factory=dict,
        description="models' kinds, context windows and output caps, added to or replacing the built-in table's "
        "(domain/model_limits.py); a priced model in neither is checked without model limits",
    )
    upload_part_bytes: int = Field(
        16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="multipart part size of the files written to S3: each part is a billed PUT; each open file "
        "buffers one part in memory",
    )
    output_prefix: str = Field("jobs", min_length=1)
    region: str = "us-east-1"
    names: ResourceNames = ResourceNames()
    functions: FunctionSizing = FunctionSizing()
    emulator: EmulatorSettings = EmulatorSettings()
    recovery: RecoverySettings = RecoverySettings()
    batch_queue: BatchQueueSettings = BatchQueueSettings()
    budget: BudgetSettings = BudgetSettings()
    retention: RetentionSettings = RetentionSettings()
    encryption: EncryptionSettings = EncryptionSettings()

    @model_validator(mode="after")
    def _kms_key_in_the_stacks_region(self) -> Settings:
        # S3, DynamoDB, SQS and SNS use a key of their own region only.
        region = self.encryption.key_region()
        if region is not None and region != self.region:
            raise ValueError(f"encryption.kms_key_arn is a key in {region}, not in the stack's region {self.region}")
        return self

    @model_validator(mode="after")
    def _polls_in_order(self) -> Settings:
        if self.max_poll_seconds < self.poll_seconds:
            raise ValueError(f"max_poll_seconds ({self.max_poll_seconds}) is below poll_seconds ({self.poll_seconds})")
        return self

    @model_validator(mode="after")
    def _fallback_models_are_priced(self) -> Settings:
        unknown = sorted(
            name
            for pair in self.budget.fallback_models.items()
            for name in pair
            if find_price(self.pricing, maintained_table(), name)[0] is None
        )
        if unknown:
            raise ValueError(f"budget.fallback_models names models with no price: {', '.join(unknown)}")
        return self


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
    # How an invocation's duration is measured for the run's AWS cost: the wall clock, as Lambda
    # bills it; a local run, whose functions share two cores with moto and the emulator, counts
    # the invocation's own CPU time plus a typical in-region latency per AWS request instead.
    meter_clock: Literal["wall", "cpu"] = "wall"
    # Deployed functions get the secret's ARN and read the key when they first call OpenAI; a
    # local run passes the key itself. Functions that never call OpenAI need neither.
    openai_api_key: str | None = None
    openai_api_key_secret_arn: str | None = None
    queue_url: str | None = None  # the realtime queue; only the functions of the hot path need it


SETTINGS_ENV = "BATCHLINE_SETTINGS"
METER_CLOCK_ENV = "BATCHLINE_METER_CLOCK"
OPENAI_KEY_SECRET_ENV = "OPENAI_API_KEY_SECRET_ARN"
_REQUIRED_ENV = {"table_name": "TABLE_NAME", "output_bucket": "OUTPUT_BUCKET"}


def runtime_environment_variables(
    settings: Settings, *, table_name: str, output_bucket: str, queue_url: str
) -> dict[str, str]:
    """The environment both the stack and the local run give every function."""
    return {
        SETTINGS_ENV: settings.model_dump_json(),
        "TABLE_NAME": table_name,
        "OUTPUT_BUCKET": output_bucket,
        "QUEUE_URL": queue_url,
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
        meter_clock=os.environ.get(METER_CLOCK_ENV) or "wall",
        queue_url=os.environ.get("QUEUE_URL") or None,
        settings=load_settings(json.loads(os.environ[SETTINGS_ENV])),
    )
