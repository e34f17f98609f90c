"""Worker: consume realtime requests from SQS and call the provider at the shared limit.

Partial batch responses: a message whose request is not finished (no room in the rate limit,
circuit open, retries used up for this delivery) is reported as failed and comes back later;
the others are deleted. Exactly once, as far as the user can tell: the call is idempotent on
(job, custom_id), so a message delivered twice never buys a second answer, and the outcome is
written once with a conditional write. A message on its last delivery records a final error
instead of failing, so even a request that never got an answer is accounted for.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from batchline.domain.budget import STAGE_BUDGET, Stance, month_of, realtime_ceiling_nano, stop_message
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import error_record, result_record, usage_tokens
from batchline.domain.realtime import (
    CallPolicy,
    Outcome,
    Provider,
    ProviderResponse,
    RealtimeRequest,
    RetryLater,
    execute,
)
from batchline.handlers.dependencies import (
    budget_policy,
    budgets,
    circuit_breaker,
    environment,
    job_store,
    logger,
    metered,
    on_reset,
    openai_realtime,
    output_objects,
    publish_metric,
    rate_limiter,
    request_queue,
    tracer,
)
from batchline.topology import (
    PROVIDER_CALLS_METRIC,
    PROVIDER_RATE_LIMITED_METRIC,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
)

ROUTE_REALTIME = "realtime"
_REQUEST_FIELDS = ("job_id", "line", "custom_id", "url", "model", "body", "token_cost")
# An outcome record larger than this goes to S3; DynamoDB items stop at 400 KB.
_MAX_RECORD_BYTES = 350_000
# Idempotency records outlive any job: a request answered once is never paid for again.
_IDEMPOTENCY_SECONDS = 7 * 24 * 3600

# A batch whose every message must come back is still a normal answer, not a function error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def _idempotency() -> IdempotencyConfig:
    return IdempotencyConfig(event_key_jmespath="[job_id, custom_id]", expires_after_seconds=_IDEMPOTENCY_SECONDS)


@cache
def _call_once():
    """The provider call, made idempotent on (job_id, custom_id) with Powertools."""
    persistence = DynamoDBPersistenceLayer(
        table_name=environment().table_name,
        key_attr=TABLE_PARTITION_KEY,
        sort_key_attr=TABLE_SORT_KEY,
        expiry_attr="expires_at",
    )

    @idempotent_function(data_keyword_argument="request", config=_idempotency(), persistence_store=persistence)
    def call_and_record(request: dict) -> dict:
        """Returns a small summary: the response itself is stored by `_record`, not in the idempotency item.

        The request's worst-case cost is reserved in the budget before the call and settled with
        its real cost in the same transaction that records the outcome; a call that does not
        happen this time gives its reservation back.
        """
        settings = environment().settings.realtime
        request, reserved, stopped = _within_budget(request)
        if stopped is not None:
            _record(request, stopped)
            return {"succeeded": False, "code": stopped.code, "message": stopped.message}
        try:
            outcome = _call(request, settings)
        except BaseException:
            budgets().give_back(request["job_id"], reserved)
            raise
        _record(request, outcome, reserved_nano=reserved)
        return {"succeeded": outcome.succeeded, "code": outcome.code, "message": outcome.message}

    return call_and_record


def _within_budget(request: dict) -> tuple[dict, int, Outcome | None]:
    """(request, reserved nano-dollars, None) ready to send, or the budget's refusal as an outcome."""
    job_id, month = request["job_id"], request["budget_month"]
    job_scope, month_scope = budgets().usage(job_id, month)
    policy = budget_policy()
    stance = policy.stance(job_scope, month_scope)
    if stance is Stance.STOP:
        return request, 0, _budget_stop(stop_message((job_scope, month_scope), policy.stop_threshold))
    model = policy.model_for(request["model"], stance)
    if model != request["model"]:
        request = {**request, "model": model, "body": {**request["body"], "model": model}}
    price = environment().settings.price_book().price_for(model)
    reserved = realtime_ceiling_nano(price.input_per_million, price.output_per_million, request["token_cost"])
    if not budgets().take(job_id, month, reserved):
        return request, 0, _budget_stop("not sent: no room left in the job's or the month's budget for this request")
    return request, reserved, None


def _budget_stop(reason: str) -> Outcome:
    return Outcome(succeeded=False, code="budget_exhausted", message=reason, stage=STAGE_BUDGET)


class _CountedProvider:
    """The provider, counting this invocation's calls and 429s for the dashboard's 429 share."""

    def __init__(self, provider: Provider, tally: dict[str, int]) -> None:
        self._provider = provider
        self._tally = tally

    def call(self, url: str, body: dict, *, client_request_id: str | None = None) -> ProviderResponse:
        response = self._provider.call(url, body, client_request_id=client_request_id)
        self._tally["calls"] += 1
        self._tally["rate_limited"] += response.status == 429
        return response


_invocation = threading.local()  # the local run invokes workers on several threads at once


def _call(request: dict, settings) -> Outcome:
    return execute(
        RealtimeRequest(**{k: request[k] for k in _REQUEST_FIELDS}),
        provider=_CountedProvider(openai_realtime(), _invocation.tally),
        limiter=rate_limiter(),
        circuit=circuit_breaker(),
        policy=CallPolicy(
            max_attempts=settings.max_attempts,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
            sleep=time.sleep,
        ),
    )


on_reset(_call_once.cache_clear)
on_reset(_idempotency.cache_clear)


def _record(message: dict, outcome: Outcome, *, reserved_nano: int = 0) -> None:
    job_id, line, custom_id, model = message["job_id"], message["line"], message["custom_id"], message["model"]
    prices = environment().settings.price_book()
    tally: dict[str, Any] = {}
    spent_nano = 0
    if outcome.succeeded:
        record = result_record(custom_id=custom_id, line=line, route=ROUTE_REALTIME, model=model, response=outcome.body)
        input_tokens, output_tokens = usage_tokens(record["usage"])
        cost = prices.realtime_cost(model, input_tokens, output_tokens)
        # Counters are integers (nano-dollars): atomic ADDs of floats would drift, and DynamoDB
        # numbers such as 6E-8 trip some clients.
        nano = spent_nano = round(cost * 1e9)
        tally = {
            # Apart from the job's summary fields, which Finalize overwrites at every run.
            "realtime_input_tokens": input_tokens,
            "realtime_output_tokens": output_tokens,
            "realtime_cost_nano_usd": nano,
        }
    else:
        record = error_record(
            custom_id=custom_id,
            line=line,
            stage=outcome.stage,
            code=outcome.code or "provider_error",
            message=outcome.message or "",
            status_code=outcome.status_code,
        )
        record["route"] = ROUTE_REALTIME
    raw = orjson.dumps(record)
    record_key = None
    if len(raw) > _MAX_RECORD_BYTES:
        record_key = JobLayout(job_id, environment().settings.output_prefix).realtime_outcome(line)
        output_objects().put(record_key, raw, "application/json")
        raw = b""
    also: tuple[dict, ...] = ()
    if reserved_nano or spent_nano:
        tally |= {"committed_nano": spent_nano - reserved_nano, "spent_nano": spent_nano}
        also = (
            budgets().month_settle_update(message["budget_month"], reserved_nano=reserved_nano, actual_nano=spent_nano),
        )
    stored = job_store().record_outcome(
        job_id,
        line,
        record=raw.decode(),
        succeeded=outcome.succeeded,
        tally=tally,
        record_key=record_key,
        also=also,
    )
    if not stored:
        logger.info("duplicate delivery: outcome already recorded", extra={"line": line})


def _final_error(code: str, text: str) -> Outcome:
    return Outcome(succeeded=False, code=code, message=text)


def record_handler(record: SQSRecord) -> None:
    message = orjson.loads(record.body)
    job_id, line = message["job_id"], message["line"]
    store = job_store()
    if store.has_outcome(job_id, line):
        return  # answered on an earlier delivery
    job = store.get_job(job_id) or {}
    message["budget_month"] = job.get("budget_month") or month_of()
    halted = job.get("halted")
    if halted:
        _record(message, _final_error("job_halted", f"not sent: the job was stopped ({halted})"))
        return
    if "body_key" in message:
        message["body"] = orjson.loads(b"".join(output_objects().chunks(message.pop("body_key"))))
    request = {k: message[k] for k in (*_REQUEST_FIELDS, "budget_month")}
    settings = environment().settings.realtime
    if _seconds_left() < settings.max_wait_for_capacity_seconds + _CALL_MARGIN_SECONDS:
        # Too little time left in this invocation to wait for room and call: pass it on untouched.
        request_queue().requeue(record.body, 0)
        return
    try:
        summary = _call_once()(request=request)
    except RetryLater as exc:
        if not exc.provider_failed:
            # Only waited its turn (window full, circuit open): a fresh message, so that waiting
            # never uses up the deliveries that send a message to the dead-letter queue.
            request_queue().requeue(record.body, exc.delay_seconds)
            return
        receives = int(record.attributes.approximate_receive_count or 1)
        if receives < settings.max_receive_count:
            request_queue().retry_in(record.receipt_handle, exc.delay_seconds)
            raise
        _record(message, _final_error("retries_exhausted", f"no answer after {receives} deliveries: {exc}"))
        return
    if summary["code"] == "insufficient_quota":
        store.halt_job(job_id, f"{summary['code']}: {summary['message']}")
        logger.error("job halted", extra={"reason": summary["code"]})


_deadline = [float("inf")]
# Time kept for one call after the wait for room (the provider's answer, recording it).
_CALL_MARGIN_SECONDS = 60.0


def _seconds_left() -> float:
    return _deadline[0] - time.monotonic()


def _jobs_of_batch(event: dict, result: Any) -> list[str]:
    """The jobs whose messages an invocation served: its usage is shared among them."""
    return [orjson.loads(record["body"])["job_id"] for record in event.get("Records", [])]


def _publish_call_counts(tally: dict[str, int]) -> None:
    if not tally["calls"]:
        return
    publish_metric(PROVIDER_CALLS_METRIC, tally["calls"], MetricUnit.Count)
    publish_metric(PROVIDER_RATE_LIMITED_METRIC, tally["rate_limited"], MetricUnit.Count)


@metered("worker", _jobs_of_batch)
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    _deadline[0] = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    _idempotency().register_lambda_context(context)
    _invocation.tally = {"calls": 0, "rate_limited": 0}
    try:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        _publish_call_counts(_invocation.tally)
