"""Wiring: the adapters and use cases a function needs, built from its environment once per cold start.

The handlers and the local run take their use cases from here; nothing else builds an adapter.
Logs, metrics and traces are in batchline/observability.py, what an invocation uses in AWS in
batchline/metering.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit

from batchline.adapters.admission import DynamoAdmissionLedger
from batchline.adapters.answer_cache import DynamoAnswerCache
from batchline.adapters.aws_meter import current_usage, waited_seconds
from batchline.adapters.budgets import DynamoBudgets
from batchline.adapters.dynamo_limits import DynamoCircuitBreaker, DynamoTokenBucket, key_scope
from batchline.adapters.job_store import JobStore, dynamodb_resource, now_iso
from batchline.adapters.openai_batches import OpenAIBatches
from batchline.adapters.openai_credentials import openai_api_key
from batchline.adapters.openai_realtime import OpenAIRealtime
from batchline.adapters.outcome_index import OutcomeIndex
from batchline.adapters.plan_outputs import S3PlanOutputs
from batchline.adapters.realtime_outcomes import S3OutcomeSpool
from batchline.adapters.s3_objects import S3Objects, s3_client
from batchline.adapters.spool import LineOrderedSpool
from batchline.adapters.sqs_queue import RequestQueue, sqs_client
from batchline.composition import planner_for, price_book, validator_for
from batchline.domain.budget import BudgetPolicy, month_of, to_nano
from batchline.domain.layout import JobLayout
from batchline.domain.planning import PlanSummary
from batchline.domain.request_line import InvalidLine
from batchline.engines.tokenization import ParallelTokenCounter
from batchline.observability import DashboardMetrics, logger, publish_metric
from batchline.settings import RuntimeEnvironment, SettingsError, runtime_environment
from batchline.workflow.enqueueing import Enqueueing
from batchline.workflow.finalizing import Finalization
from batchline.workflow.loop_context import LoopContext, LoopSettings
from batchline.workflow.planning_job import JobPlanning, PlanDefaults
from batchline.workflow.realtime_wait import RealtimeWait
from batchline.workflow.realtime_work import RealtimeWork, WorkSettings
from batchline.workflow.shard_loop import ShardLoop

if TYPE_CHECKING:
    from batchline.adapters.table_io import S3TableInputs, S3TableOutputs


def environment() -> RuntimeEnvironment:
    return runtime_environment()


@cache
def job_store() -> JobStore:
    return JobStore(environment().table_name)


def objects(bucket: str) -> S3Objects:
    return S3Objects(bucket, part_bytes=environment().settings.upload_part_bytes)


def output_objects() -> S3Objects:
    return objects(environment().output_bucket)


def openai_batches() -> OpenAIBatches:
    """The key is looked up (and its secret re-read after a few minutes) on each use."""
    env = environment()
    return _openai_batches_for(openai_api_key(env), env.openai_base_url)


@cache
def _openai_batches_for(api_key: str, base_url: str | None) -> OpenAIBatches:
    return OpenAIBatches(api_key=api_key, base_url=base_url)


def openai_realtime() -> OpenAIRealtime:
    env = environment()
    return _openai_realtime_for(openai_api_key(env), env.openai_base_url)


@cache
def _openai_realtime_for(api_key: str, base_url: str | None) -> OpenAIRealtime:
    return OpenAIRealtime(api_key=api_key, base_url=base_url)


@cache
def request_queue() -> RequestQueue:
    queue_url = environment().queue_url
    if not queue_url:
        raise SettingsError("missing environment variable QUEUE_URL (the realtime queue)")
    return RequestQueue(queue_url)


@cache
def rate_limiter() -> DynamoTokenBucket:
    """The shared bucket of the key in use: limits belong to a key's organisation, not to a job."""
    env = environment()
    return DynamoTokenBucket(
        dynamodb_resource().Table(env.table_name),
        env.settings.realtime,
        scope=key_scope(openai_api_key(env), env.openai_base_url),
    )


def outcome_spool() -> S3OutcomeSpool:
    return S3OutcomeSpool(output_objects(), environment().settings.output_prefix)


def realtime_work(seconds_left: Callable[[], float], invocation: str = "") -> RealtimeWork:
    """The realtime use case with its ports, for one invocation (`seconds_left` and its id are its own)."""
    settings = environment().settings
    realtime = settings.realtime
    guess = realtime.highest_limit()
    return RealtimeWork(
        jobs=job_store(),
        budgets=budgets(),
        budget_policy=budget_policy(),
        prices=price_book(settings),
        limiter=rate_limiter(),
        circuit=circuit_breaker(),
        provider=openai_realtime(),
        spool=outcome_spool(),
        queue=request_queue(),
        settings=WorkSettings(
            concurrent_calls=realtime.concurrent_calls,
            max_pace_wait_seconds=realtime.max_pace_wait_seconds,
            max_receive_count=realtime.max_receive_count,
            backoff_base_seconds=realtime.backoff_base_seconds,
            backoff_max_seconds=realtime.backoff_max_seconds,
            max_rate_limited_attempts=realtime.max_rate_limited_attempts,
            seconds_per_request=60 / (guess.requests_per_minute * realtime.safety_fraction),
            resend_in_doubt=realtime.resend_in_doubt,
            record_every_seconds=realtime.record_every_seconds,
            last_call_seconds=2 * realtime.expected_latency_seconds,
            schema_attempts=realtime.schema_attempts,
        ),
        seconds_left=seconds_left,
        now=now_iso,
        on_calling=waited_seconds,
        invocation=invocation,
    )


@cache
def answer_cache() -> DynamoAnswerCache:
    return DynamoAnswerCache(environment().table_name)


def _answers() -> DynamoAnswerCache | None:
    """The answer cache, or None when the `cache` setting turns it off for every job."""
    return answer_cache() if environment().settings.cache else None


@cache
def circuit_breaker() -> DynamoCircuitBreaker:
    return DynamoCircuitBreaker(dynamodb_resource().Table(environment().table_name), environment().settings.realtime)


@cache
def budgets() -> DynamoBudgets:
    monthly = environment().settings.budget.monthly_usd
    return DynamoBudgets(
        dynamodb_resource().Table(environment().table_name),
        month_cap_nano=None if monthly is None else to_nano(monthly),
    )


@cache
def budget_policy() -> BudgetPolicy:
    budget = environment().settings.budget
    return BudgetPolicy(
        fallback_threshold=budget.fallback_threshold,
        stop_threshold=budget.stop_threshold,
        fallback_models=dict(budget.fallback_models),
    )


@cache
def admission_ledger() -> DynamoAdmissionLedger:
    return DynamoAdmissionLedger(dynamodb_resource().Table(environment().table_name))


def finalization() -> Finalization:
    """The Finalize use case with this function's adapters (also a local run's, for its outputs so far)."""
    settings = environment().settings
    return Finalization(
        jobs=job_store(),
        storage=output_objects(),
        outcomes=outcome_spool(),
        outcome_index=OutcomeIndex,
        budgets=budgets(),
        output_prefix=settings.output_prefix,
        output_bucket=environment().output_bucket,
        now=now_iso,
        source=objects,
        tables=_table_outputs(),
        usage_so_far=current_usage,
        prices=price_book(settings),
        answers=_answers(),
    )


# Threads counting tokens beside the planner (a Lambda's two vCPUs at the memory Plan is given).
PLAN_TOKEN_THREADS = 2


def _table_inputs() -> S3TableInputs:
    # pyarrow and Jinja2 load with the table adapters, in Plan and Finalize only: not in every function.
    from batchline.adapters.table_io import S3TableInputs

    return S3TableInputs(objects)


def _table_outputs() -> S3TableOutputs:
    from batchline.adapters.table_io import S3TableOutputs

    return S3TableOutputs(objects, output_objects(), price_book(environment().settings))


def plan_lines(job_id: str, lines: Iterable[tuple[int, bytes | InvalidLine]], use_cache: bool) -> PlanSummary:
    """Validate, count and cut `lines` into the job's shard files in the output bucket; with `use_cache`
    (and the `cache` setting on), what the cache answers or the file repeats is kept out of the shards."""
    settings = environment().settings
    outputs = S3PlanOutputs(output_objects(), JobLayout(job_id, settings.output_prefix))
    counter = ParallelTokenCounter(PLAN_TOKEN_THREADS)
    answers = _answers() if use_cache else None
    try:
        planner = planner_for(
            settings, outputs=outputs, token_counter=counter, answers=answers, kept_back=outputs if answers else None
        )
        summary = planner.run(lines)
        outputs.close()
    except BaseException:
        outputs.abort()
        raise
    finally:
        counter.close()
    return summary


def job_planning() -> JobPlanning:
    """The Plan use case with this function's adapters."""
    settings = environment().settings
    return JobPlanning(
        jobs=job_store(),
        source=objects,
        plan_lines=plan_lines,
        tables=_table_inputs(),
        budgets=budgets(),
        defaults=PlanDefaults(
            job_budget_usd=settings.budget.job_usd,
            default_mode=settings.default_mode,
            auto_realtime_max_requests=settings.auto_realtime_max_requests,
            cache=settings.cache,
        ),
        count=lambda name, value: publish_metric(name, value, MetricUnit.Count),
        now=now_iso,
        month=month_of,
        on_job=lambda job_id: logger.append_keys(job_id=job_id),
    )


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def loop_context() -> LoopContext:
    """The poll loop's ports and settings, for one invocation (the provider's key is looked up now)."""
    settings = environment().settings
    recovery = settings.recovery
    return LoopContext(
        jobs=job_store(),
        storage=output_objects(),
        provider=openai_batches,
        admission=admission_ledger(),
        budgets=budgets(),
        budget_policy=budget_policy(),
        prices=price_book(settings),
        validator=lambda: validator_for(settings),
        queue=request_queue,
        spool=LineOrderedSpool,
        metrics=DashboardMetrics(),
        clock=SystemClock(),
        settings=LoopSettings(
            output_prefix=settings.output_prefix,
            completion_window=settings.completion_window,
            poll_seconds=settings.poll_seconds,
            max_poll_seconds=settings.max_poll_seconds,
            max_polls_per_execution=settings.max_polls_per_execution,
            batches_in_flight=settings.map_max_concurrency,
            step_attempts=recovery.step_attempts,
            max_attempts=recovery.max_attempts,
            realtime_below_requests=recovery.realtime_below_requests,
            stuck_after_seconds=recovery.stuck_after_seconds,
            realtime_stall_seconds=settings.realtime.stall_seconds,
            queue_limit=settings.batch_queue.limit_for,
        ),
    )


def shard_loop() -> ShardLoop:
    """The batch route's poll loop (SubmitShards, CheckShards) with this invocation's ports."""
    return ShardLoop(loop_context())


def enqueueing() -> Enqueueing:
    return Enqueueing(loop_context())


def realtime_wait() -> RealtimeWait:
    return RealtimeWait(loop_context())


def spilled_body(key: str) -> dict[str, Any]:
    """A request body too big for its message, from the output bucket."""
    return orjson.loads(b"".join(output_objects().chunks(key)))


def seconds_left(context: Any) -> Callable[[], float]:
    """Seconds left before the invocation's timeout, as Lambda's context tells (no limit without one)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return lambda: float("inf")
    return lambda: remaining() / 1000


_reset_hooks: list = []


def on_reset(clear) -> None:
    """Register another cache (a handler's own) to be cleared by `reset`."""
    _reset_hooks.append(clear)


def reset() -> None:
    """Forget every cached client and setting (tests and the local run change the environment)."""
    for clear in _reset_hooks:
        clear()
    for cached in (
        job_store,
        _openai_batches_for,
        _openai_realtime_for,
        request_queue,
        rate_limiter,
        circuit_breaker,
        budgets,
        budget_policy,
        admission_ledger,
        answer_cache,
        runtime_environment,
        dynamodb_resource,
        s3_client,
        sqs_client,
    ):
        cached.cache_clear()
