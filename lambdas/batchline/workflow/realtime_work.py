"""Work one delivery of realtime requests: call what the shared limit allows, record, hand back the rest.

One invocation serves a whole batch of queued requests, so that the costs that do not depend on
the number of requests (a limiter write, a budget reservation, one transaction, one S3 object, a
few SQS calls) are shared by all of them:

1. requests already answered (a duplicate delivery, a rerun) are dropped; a stopped job's requests
   are recorded as not sent, and stay unanswered so that a resubmission sends them;
2. the budget reserves each request's worst case, for the whole batch at once;
3. the shared token bucket grants requests as it refills; the granted ones are called at once on a
   pool of threads; waits longer than `max_pace_wait_seconds` are never slept inside the invocation:
   those requests go back to the queue, due when the bucket will have room for them;
4. answers are written to S3 as one JSON Lines object, and the lines they answer, the job's
   counters and the budget's settlement in one transaction;
5. transient failures come back after a backoff, through the message's own visibility, and on
   their last delivery are recorded as errors;
6. an answer that does not follow the JSON Schema its request asked for was billed, and counts as
   spent, but answers nothing: the request goes back to the queue as a new message that says how many
   answers failed so far, until `schema_attempts` answers have; the last one is recorded as an error.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from batchline.domain.answers import CODE_SCHEMA_INVALID, Parsed, SchemaProblem, check_response
from batchline.domain.budget import STAGE_BUDGET, BudgetPolicy, ScopeUsage, Stance, realtime_ceiling_nano, stop_message
from batchline.domain.outcomes import STAGE_PROVIDER, error_record, result_record, schema_error, usage_tokens
from batchline.domain.pricing import PriceBook
from batchline.domain.realtime import (
    CircuitBreaker,
    JobState,
    Provider,
    ProviderResponse,
    RateLimiter,
    RealtimeRequest,
    RetryLater,
    SendingMark,
    Verdict,
    backoff_seconds,
    judge,
)

ROUTE_REALTIME = "realtime"
STAGE_NOT_SENT = "not_sent"


@dataclass(frozen=True)
class Delivery:
    """One queued request as it arrived: the request, and what SQS said about its message."""

    message_id: str
    receipt_handle: str
    receive_count: int
    raw: str  # the message body, to put it back on the queue unchanged
    request: RealtimeRequest


@dataclass(frozen=True)
class WorkSettings:
    concurrent_calls: int
    max_pace_wait_seconds: float
    max_receive_count: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    max_rate_limited_attempts: int  # 429s in a row for one request within one invocation
    seconds_per_request: float  # spacing of requests handed back together (about 1 / the request rate)
    resend_in_doubt: bool = False  # send again the lines a dead invocation left without an answer
    record_every_seconds: float = 5.0  # answers are recorded at least this often, not only at the end
    # No call starts with less time left than this: the invocation's end would cut it off, and a call
    # cut off may have been billed with no answer recorded (in doubt). What is left goes back to the queue.
    last_call_seconds: float = 2.0
    # Answers a request that asks for a JSON Schema gets before one that does not follow it is final.
    schema_attempts: int = 3


class JobStatePort(Protocol):
    def job_state(self, job_id: str) -> JobState: ...

    def answered_lines(self, job_id: str, lines: Iterable[int]) -> set[int]: ...

    def mark_sending(self, job_id: str, invocation: str, lines: Iterable[int], *, until: float) -> None: ...

    def sending_marks(self, job_id: str) -> list[SendingMark]: ...

    def record_answers(
        self,
        job_id: str,
        *,
        lines: Iterable[int],
        counters: dict[str, int],
        also: tuple[dict[str, Any], ...] = (),
        finished_sending: str | None = None,
    ) -> set[int]: ...

    def halt_job(self, job_id: str, reason: str) -> None: ...


class BudgetPort(Protocol):
    def usage(self, job_id: str, month: str) -> tuple[ScopeUsage, ScopeUsage]: ...

    def take(self, job_id: str, month: str, estimate_nano: int) -> bool: ...

    def month_settle_update(self, month: str, *, reserved_nano: int, actual_nano: int) -> dict[str, Any]: ...


class OutcomeSpool(Protocol):
    def write(self, job_id: str, records: Sequence[dict[str, Any]]) -> None:
        """Store one invocation's outcome records (JSON Lines) where Finalize will find them."""


class QueuePort(Protocol):
    def requeue_all(self, bodies: Sequence[tuple[str, float]]) -> None:
        """Put messages back as new ones, each visible after its delay (waiting never uses up deliveries)."""

    def retry_all_in(self, receipts: Sequence[tuple[str, float]]) -> None:
        """Make received messages visible again after their delays (this delivery counted)."""


@dataclass
class WorkReport:
    """What the handler answers and publishes: the messages to report failed, and the counts."""

    retry_message_ids: list[str] = field(default_factory=list)
    calls: int = 0
    rate_limited: int = 0
    answered: int = 0
    not_sent: int = 0
    requeued: int = 0
    schema_retries: int = 0  # answers that failed their schema, their requests asked again


@dataclass
class _Pending:
    delivery: Delivery
    reserved_nano: int = 0
    attempts: int = 0  # 429s met in this invocation
    call_seconds: float | None = None  # how long its last call took, from the call to the answer


@dataclass
class _JobTally:
    records: list[dict[str, Any]] = field(default_factory=list)
    answered_lines: list[int] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reserved_sent_nano: int = 0  # reservations of requests the provider answered for good
    spent_nano: int = 0
    unused_nano: int = 0  # reservations of requests not sent after all: back to the job's hold
    by_line: dict[int, dict[str, int]] = field(default_factory=dict)  # what each answered line adds


@dataclass
class _Run:
    """The state of one invocation's work."""

    report: WorkReport = field(default_factory=WorkReport)
    tallies: dict[str, _JobTally] = field(default_factory=lambda: defaultdict(_JobTally))
    states: dict[str, JobState] = field(default_factory=dict)
    queues: dict[str, list[_Pending]] = field(default_factory=lambda: defaultdict(list))  # per model
    # jobs stopped during this invocation: (the error code of their requests left unsent, its message)
    halted: dict[str, tuple[str, str]] = field(default_factory=dict)
    marked: set[str] = field(default_factory=set)  # jobs whose lines this invocation marked as being sent
    requeue: list[tuple[str, float]] = field(default_factory=list)
    retry: list[tuple[Delivery, float]] = field(default_factory=list)


def _first_of_each_line(deliveries: Iterable[Delivery]) -> list[Delivery]:
    seen: set[int] = set()
    kept = []
    for delivery in deliveries:
        if delivery.request.line not in seen:
            seen.add(delivery.request.line)
            kept.append(delivery)
    return kept


class RealtimeWork:
    def __init__(
        self,
        *,
        jobs: JobStatePort,
        budgets: BudgetPort,
        budget_policy: BudgetPolicy,
        prices: PriceBook,
        limiter: RateLimiter,
        circuit: CircuitBreaker,
        provider: Provider,
        spool: OutcomeSpool,
        queue: QueuePort,
        settings: WorkSettings,
        seconds_left: Callable[[], float],
        now: Callable[[], str],
        on_calling: Callable[[float], None] = lambda seconds: None,
        rng: random.Random | None = None,
        invocation: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._jobs = jobs
        self._budgets = budgets
        self._policy = budget_policy
        self._prices = prices
        self._limiter = limiter
        self._circuit = circuit
        self._provider = provider
        self._spool = spool
        self._queue = queue
        self._settings = settings
        self._seconds_left = seconds_left
        self._now = now
        self._on_calling = on_calling  # told how long calls were in flight (what a deployed function is billed)
        self._rng = rng or random.Random()
        self._invocation = invocation or f"{wall_clock():.6f}-{random.getrandbits(48):012x}"
        self._wall_clock = wall_clock

    # -- the whole delivery -------------------------------------------------------------------
    def work(self, deliveries: Sequence[Delivery]) -> WorkReport:
        run = _Run()
        by_job: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            by_job[delivery.request.job_id].append(delivery)
        for job_id, job_deliveries in by_job.items():
            state = run.states[job_id] = self._jobs.job_state(job_id)
            answered = self._jobs.answered_lines(job_id, (d.request.line for d in job_deliveries))
            fresh = _first_of_each_line(d for d in job_deliveries if d.request.line not in answered)
            fresh = self._past_dead_invocations(run, job_id, fresh)
            if state.halted:
                reason = f"not sent: the job was stopped ({state.halted})"
                for delivery in fresh:
                    self._not_sent(run, delivery, "job_halted", reason)
                continue
            for item in self._reserve(run, job_id, state, fresh):
                run.queues[item.delivery.request.model].append(item)
        self._send(run)
        self._flush(run, final=True)
        if run.requeue:
            self._queue.requeue_all(run.requeue)
            run.report.requeued = len(run.requeue)
        if run.retry:
            self._queue.retry_all_in([(delivery.receipt_handle, delay) for delivery, delay in run.retry])
            run.report.retry_message_ids = [delivery.message_id for delivery, _ in run.retry]
        return run.report

    def _past_dead_invocations(self, run: _Run, job_id: str, deliveries: list[Delivery]) -> list[Delivery]:
        """Leave out the lines another invocation is sending, or was when it died.

        A live invocation's lines come back once it has surely ended. A dead one's lines without an
        answer are in doubt: the provider may have answered and billed them, so they are recorded
        as errors (`in_doubt`) rather than paid for twice, unless settings say to send them again.
        """
        if not deliveries:
            return deliveries
        marks = [mark for mark in self._jobs.sending_marks(job_id) if mark.invocation != self._invocation]
        if not marks:
            return deliveries
        now = self._wall_clock()
        kept = []
        for delivery in deliveries:
            line = delivery.request.line
            mark = next((mark for mark in marks if line in mark.lines), None)
            if mark is None:
                kept.append(delivery)
            elif mark.until > now:
                run.requeue.append((delivery.raw, mark.until - now + 1 + self._rng.random()))
            elif self._settings.resend_in_doubt:
                kept.append(delivery)
            else:
                message = (
                    f"in doubt: sent at {mark.since} or later by a worker that stopped before recording the answer "
                    "(killed, crashed or timed out); the provider may have answered and billed it, so it was not "
                    "sent again. Set realtime.resend_in_doubt (local run: --resend-in-doubt) to send it again"
                )
                self._answered(run, _Pending(delivery), self._error(delivery.request, "in_doubt", message, 0))
        return kept

    # -- budget ---------------------------------------------------------------------------------
    def _reserve(self, run: _Run, job_id: str, state: JobState, deliveries: list[Delivery]) -> list[_Pending]:
        """Reserve the batch's worst case in the budget: all at once when it fits, else one by one."""
        if not deliveries:
            return []
        job_scope, month_scope = self._budgets.usage(job_id, state.budget_month)
        stance = self._policy.stance(job_scope, month_scope)
        if stance is Stance.STOP:
            reason = stop_message((job_scope, month_scope), self._policy.stop_threshold)
            for delivery in deliveries:
                self._not_sent(run, delivery, "budget_exhausted", reason, stage=STAGE_BUDGET)
            return []
        pending = []
        for delivery in deliveries:
            request = delivery.request
            model = self._policy.model_for(request.model, stance)
            if model != request.model:
                request = replace(request, model=model, body={**request.body, "model": model})
                delivery = replace(delivery, request=request)
            price = self._prices.price_for(request.model)
            if price is None:  # validation refuses a model without a price: a request reaching here has one
                raise ValueError(f"no price for model {request.model!r}: the budget cannot bound its cost")
            ceiling = realtime_ceiling_nano(*price.ceiling_rates(), request.token_cost)
            pending.append(_Pending(delivery, reserved_nano=ceiling))
        sendable = self._policy.sendable((job_scope, month_scope), [p.reserved_nano for p in pending])
        if sendable < len(pending):
            reason = stop_message((job_scope, month_scope), self._policy.stop_threshold)
            for item in pending[sendable:]:
                self._not_sent(run, item.delivery, "budget_exhausted", reason, stage=STAGE_BUDGET)
            pending = pending[:sendable]
        if not pending:
            return []
        if self._budgets.take(job_id, state.budget_month, sum(p.reserved_nano for p in pending)):
            return pending
        kept = []
        for item in pending:  # not all of it fits: as many as do, in order
            if self._budgets.take(job_id, state.budget_month, item.reserved_nano):
                kept.append(item)
            else:
                reason = "not sent: no room left in the job's or the month's budget for this request"
                self._not_sent(run, item.delivery, "budget_exhausted", reason, stage=STAGE_BUDGET)
        return kept

    # -- calls at the shared limit ------------------------------------------------------------
    def _flush(self, run: _Run, *, final: bool) -> None:
        """Record what is answered so far; the last time, with the end of this invocation's sending marks.

        Recording during the invocation, not only at its end, bounds what a worker that dies (a
        crash, a timeout, a killed local run) leaves in doubt to its last few seconds of answers.
        """
        for job_id, tally in list(run.tallies.items()):
            if not final and not tally.records:
                continue
            self._record(job_id, run.states[job_id], tally, marked=final and job_id in run.marked)
            run.report.answered += len(tally.answered_lines)
            run.report.not_sent += tally.counters.get("realtime_unsent", 0)
            run.tallies[job_id] = _JobTally()

    def _send(self, run: _Run) -> None:
        """Call what the limit grants as it refills, on a pool of threads, until nothing is left."""
        in_flight: dict[Future[Any], _Pending] = {}
        recorded = checked = time.monotonic()
        with ThreadPoolExecutor(max_workers=self._settings.concurrent_calls, thread_name_prefix="call") as pool:
            while run.queues or in_flight:
                if time.monotonic() - checked >= self._settings.record_every_seconds:
                    self._note_stopped_jobs(run)
                    checked = time.monotonic()
                soonest = self._dispatch(run, pool, in_flight)
                if not in_flight:
                    if run.queues:
                        time.sleep(max(0.001, soonest if soonest is not None else 0.001))
                    continue
                started = time.monotonic()
                done, _ = wait(in_flight, timeout=soonest if run.queues else None, return_when=FIRST_COMPLETED)
                self._on_calling(time.monotonic() - started)
                for future in done:
                    item = in_flight.pop(future)
                    run.report.calls += 1
                    run.tallies[item.delivery.request.job_id].counters["realtime_calls"] += 1
                    response, item.call_seconds = future.result()
                    self._settle_call(run, item, response)
                if time.monotonic() - recorded >= self._settings.record_every_seconds:
                    self._flush(run, final=False)
                    recorded = time.monotonic()

    def _note_stopped_jobs(self, run: _Run) -> None:
        """A job stopped meanwhile (the user cancelled it) sends nothing more from this invocation."""
        for job_id in run.states:
            if job_id not in run.halted:
                halted = self._jobs.job_state(job_id).halted
                if halted:
                    run.halted[job_id] = ("job_halted", f"not sent: the job was stopped ({halted})")

    def _dispatch(self, run: _Run, pool: ThreadPoolExecutor, in_flight: dict[Future[Any], _Pending]) -> float | None:
        """Start every call the shared limit grants now; the seconds until the next grant, if one is due soon."""
        soonest: float | None = None
        for model in list(run.queues):
            waiting = []
            for item in run.queues.pop(model):
                job_id = item.delivery.request.job_id
                if job_id in run.halted:  # the job was stopped meanwhile: by the provider, or the user
                    self._give_back(run, item)
                    self._not_sent(run, item.delivery, *run.halted[job_id])
                else:
                    waiting.append(item)
            free = self._settings.concurrent_calls - len(in_flight)
            if not waiting:
                continue
            if self._seconds_left() < self._settings.last_call_seconds:  # the invocation ends: no new call
                self._hand_back(run, waiting, 0.0)
                continue
            if free <= 0:
                run.queues[model] = waiting
                continue
            try:
                self._circuit.before_call(model)
                grant = self._limiter.acquire(model, [i.delivery.request.token_cost for i in waiting], at_most=free)
            except RetryLater as exc:
                self._hand_back(run, waiting, exc.delay_seconds)
                continue
            granted = waiting[: grant.granted]
            self._mark_sending(run, granted)
            for item in granted:
                in_flight[pool.submit(self._call, item.delivery.request)] = item
            rest = waiting[grant.granted :]
            if not rest:
                continue
            too_long = min(self._settings.max_pace_wait_seconds, self._seconds_left() / 2)
            if grant.wait_seconds > too_long:
                self._hand_back(run, rest, grant.wait_seconds)
                continue
            run.queues[model] = rest
            if grant.wait_seconds > 0:
                soonest = grant.wait_seconds if soonest is None else min(soonest, grant.wait_seconds)
        return soonest

    def _mark_sending(self, run: _Run, items: Sequence[_Pending]) -> None:
        """Before the calls: which lines are about to be sent, until when at the latest (see SendingMark)."""
        by_job: dict[str, list[int]] = defaultdict(list)
        for item in items:
            by_job[item.delivery.request.job_id].append(item.delivery.request.line)
        until = self._wall_clock() + self._seconds_left()
        for job_id, lines in by_job.items():
            self._jobs.mark_sending(job_id, self._invocation, lines, until=until)
            run.marked.add(job_id)
            run.tallies[job_id]  # noqa: B018 - a marked job is recorded, if only to remove its mark

    def _call(self, request: RealtimeRequest) -> tuple[ProviderResponse, float]:
        """One call, and how long it took (the report shows the slowest); whatever it raises is this
        request's failure alone, never the whole invocation's.

        An invocation that raised would come back with every request of its batch, and a request
        that always makes the client raise would bring them all back on every delivery, for ever.
        """
        started = time.monotonic()
        try:
            response = self._provider.call(request.url, request.body, client_request_id=request.custom_id)
        except Exception as exc:  # noqa: BLE001 - reported as a transient failure of this request
            response = ProviderResponse(
                0, {}, {"error": {"message": f"{type(exc).__name__}: {exc}", "code": "client_error"}}
            )
        return response, time.monotonic() - started

    def _settle_call(self, run: _Run, item: _Pending, response: ProviderResponse) -> None:
        request = item.delivery.request
        judgement = judge(response)
        verdict = judgement.verdict
        if verdict is Verdict.SUCCEEDED:
            self._circuit.succeeded(request.model)
            self._limiter.observe(request.model, response.headers)
            checked = check_response(request.body, response.body)
            if isinstance(checked, SchemaProblem):
                self._off_schema(run, item, checked, response.body)
            else:
                self._answered(run, item, self._success(request, response.body, checked))
        elif verdict is Verdict.FAILED:
            self._limiter.observe(request.model, response.headers)
            self._answered(run, item, self._error(request, judgement.code, judgement.message, response.status))
        elif verdict is Verdict.RATE_LIMITED:
            run.report.rate_limited += 1
            run.tallies[request.job_id].counters["realtime_rate_limited"] += 1
            seconds = judgement.retry_after_seconds
            if seconds is None:
                seconds = backoff_seconds(item.attempts + 1, base=1.0, ceiling=20.0, rng=self._rng)
            self._limiter.pause(request.model, seconds, response.headers)
            item.attempts += 1
            if item.attempts >= self._settings.max_rate_limited_attempts:
                self._hand_back(run, [item], seconds)
            else:
                run.queues[request.model].insert(0, item)  # first in line once the pause is over
        elif verdict is Verdict.QUOTA_EXHAUSTED:
            reason = f"insufficient_quota: {judgement.message}"
            if request.job_id not in run.halted:
                run.halted[request.job_id] = ("insufficient_quota", f"not sent: {reason}")
                self._jobs.halt_job(request.job_id, reason)
            self._give_back(run, item)
            self._not_sent(run, item.delivery, "insufficient_quota", f"not sent: {reason}")
        else:
            self._transient(run, item, judgement.message, response.status)

    def _transient(self, run: _Run, item: _Pending, message: str | None, status: int) -> None:
        """No answer worth keeping: back off through the message's visibility, or give up on its last delivery."""
        request, delivery = item.delivery.request, item.delivery
        self._circuit.failed(request.model)
        self._give_back(run, item)
        if delivery.receive_count >= self._settings.max_receive_count:
            text = f"no answer after {delivery.receive_count} deliveries: {message}"
            self._answered(run, replace(item, reserved_nano=0), self._error(request, "retries_exhausted", text, status))
            return
        delay = backoff_seconds(
            delivery.receive_count,
            base=self._settings.backoff_base_seconds,
            ceiling=self._settings.backoff_max_seconds,
            rng=self._rng,
        )
        run.retry.append((delivery, delay))

    def _off_schema(self, run: _Run, item: _Pending, problem: SchemaProblem, body: Any) -> None:
        """An answer that did not follow its schema: billed, so spent; asked again while attempts remain."""
        request = item.delivery.request
        usage = body.get("usage") if isinstance(body, dict) else None
        failures = request.schema_failures + 1
        if not problem.retriable or failures >= self._settings.schema_attempts:
            if problem.code == CODE_SCHEMA_INVALID:
                problem = replace(problem, message=f"{problem.message} (after {failures} answers)")
            record = schema_error(custom_id=request.custom_id, line=request.line, problem=problem, usage=usage)
            self._answered(run, item, {**record, "route": ROUTE_REALTIME})
            return
        # Not an answer of the line, yet the call is paid: what it spent is the job's, once, now.
        tally = run.tallies[request.job_id]
        input_tokens, output_tokens = usage_tokens(usage)
        spent = round(self._prices.realtime_cost(request.model, input_tokens, output_tokens) * 1e9)
        for name, value in (
            ("realtime_input_tokens", input_tokens),
            ("realtime_output_tokens", output_tokens),
            ("realtime_cost_nano_usd", spent),
            ("schema_retries", 1),
        ):
            tally.counters[name] += value
        tally.reserved_sent_nano += item.reserved_nano
        tally.spent_nano += spent
        item.reserved_nano = 0
        run.report.schema_retries += 1
        message = orjson.loads(item.delivery.raw)
        message["schema_failures"] = failures
        run.requeue.append((orjson.dumps(message).decode(), 1.0 + self._rng.random()))

    def _hand_back(self, run: _Run, items: Sequence[_Pending], wait_seconds: float) -> None:
        """Back to the queue as new messages, due one after another from when the bucket has room.

        Each is spread by the time its own cost takes to refill, so that they do not all come back
        at once to find the bucket empty again; the jitter keeps workers apart.
        """
        offset = max(1.0, wait_seconds)
        for index, item in enumerate(items):
            self._give_back(run, item)
            step = self._settings.seconds_per_request
            run.requeue.append((item.delivery.raw, offset + step * (index + self._rng.random())))

    # -- outcomes -------------------------------------------------------------------------------
    def _success(self, request: RealtimeRequest, body: Any, parsed: Parsed | None) -> dict[str, Any]:
        return result_record(
            custom_id=request.custom_id,
            line=request.line,
            route=ROUTE_REALTIME,
            model=request.model,
            response=body,
            parsed=parsed,
        )

    def _error(self, request: RealtimeRequest, code: str | None, message: str | None, status: int) -> dict[str, Any]:
        record = error_record(
            custom_id=request.custom_id,
            line=request.line,
            stage=STAGE_PROVIDER,
            code=code or "provider_error",
            message=message or "",
            status_code=status or None,
        )
        return {**record, "route": ROUTE_REALTIME}

    def _answered(self, run: _Run, item: _Pending, record: dict[str, Any]) -> None:
        """A final answer for the request's line: it counts, and it is never sent again."""
        request = item.delivery.request
        tally = run.tallies[request.job_id]
        added: dict[str, int] = {"realtime_done": 1}
        spent = 0
        if record.get("usage") is not None:  # a result, or an answer billed that failed its schema
            input_tokens, output_tokens = usage_tokens(record["usage"])
            cost = self._prices.realtime_cost(request.model, input_tokens, output_tokens)
            # Counters are integers (nano-dollars): atomic ADDs of floats would drift.
            spent = round(cost * 1e9)
            added |= {
                "realtime_input_tokens": input_tokens,
                "realtime_output_tokens": output_tokens,
                "realtime_cost_nano_usd": spent,
            }
        added["realtime_succeeded" if "response" in record else "realtime_failed"] = 1
        record["answered_at"] = self._now()
        if item.call_seconds is not None:  # for the report; not part of results.jsonl (finalize drops it)
            record["latency_seconds"] = round(item.call_seconds, 3)
        tally.records.append(record)
        tally.answered_lines.append(request.line)
        tally.by_line[request.line] = added
        tally.reserved_sent_nano += item.reserved_nano
        tally.spent_nano += spent

    def _not_sent(self, run: _Run, delivery: Delivery, code: str, message: str, *, stage: str = STAGE_NOT_SENT) -> None:
        """Recorded for this run's outputs, but not answered: a resubmission of the file sends it."""
        request = delivery.request
        tally = run.tallies[request.job_id]
        record = error_record(custom_id=request.custom_id, line=request.line, stage=stage, code=code, message=message)
        tally.records.append({**record, "route": ROUTE_REALTIME, "answered_at": self._now(), "unsent": True})
        tally.counters["realtime_unsent"] += 1

    def _give_back(self, run: _Run, item: _Pending) -> None:
        run.tallies[item.delivery.request.job_id].unused_nano += item.reserved_nano
        item.reserved_nano = 0

    def _record(self, job_id: str, state: JobState, tally: _JobTally, *, marked: bool) -> None:
        """One S3 object of records, then one transaction: the lines answered, the counters, the budget,
        and the end of this invocation's sending mark."""
        if not tally.records and not tally.unused_nano and not marked:
            return
        if tally.records:
            self._spool.write(job_id, tally.records)
        lines = list(tally.answered_lines)
        while True:
            counters = dict(tally.counters)
            for line in lines:
                for name, value in tally.by_line[line].items():
                    counters[name] = counters.get(name, 0) + value
            budget = {}
            also: tuple[dict[str, Any], ...] = ()
            if tally.reserved_sent_nano or tally.spent_nano or tally.unused_nano:
                # What was really spent replaces what was reserved for it; unused reservations go back.
                budget = {
                    "committed_nano": tally.spent_nano - tally.reserved_sent_nano,
                    "spent_nano": tally.spent_nano,
                    "hold_nano": tally.unused_nano,
                }
                if tally.reserved_sent_nano or tally.spent_nano:
                    also = (
                        self._budgets.month_settle_update(
                            state.budget_month, reserved_nano=tally.reserved_sent_nano, actual_nano=tally.spent_nano
                        ),
                    )
            duplicates = self._jobs.record_answers(
                job_id,
                lines=lines,
                counters=counters | budget,
                also=also,
                finished_sending=self._invocation if marked else None,
            )
            if not duplicates:
                return
            # Answered by another delivery meanwhile: counted there. What this one spent still counts.
            lines = [line for line in lines if line not in duplicates]
