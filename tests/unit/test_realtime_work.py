"""The realtime use case against in-memory fakes of its ports: no AWS, no network, no real waits."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence

import orjson
import pytest
from batchline.catalog import ModelPrice
from batchline.domain.budget import BudgetPolicy, ScopeUsage, realtime_ceiling_nano
from batchline.domain.pricing import PriceBook
from batchline.domain.rate_bucket import BucketShape, BucketState, Grant, Limits, paused, relearned, take
from batchline.domain.realtime import JobState, ProviderResponse, RealtimeRequest, SendingMark
from batchline.workflow.realtime_work import Delivery, RealtimeWork, WorkSettings

MODEL = "gpt-4o-mini"
# A hand-made price book: the worker prices what it is given, not what a table says today.
PRICES = {MODEL: ModelPrice(input_per_million=0.15, output_per_million=0.60)}
PROVIDER_LIMITS = Limits(6_000, 480_000)
OK_HEADERS = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-limit-tokens": "480000"}


def ok(prompt: int = 10, completion: int = 3) -> ProviderResponse:
    body = {"object": "chat.completion", "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    return ProviderResponse(200, OK_HEADERS, body)


def error(status: int, code: str | None = None, headers: dict | None = None) -> ProviderResponse:
    return ProviderResponse(status, headers or {}, {"error": {"message": f"refused: {status}", "code": code}})


class FakeJobs:
    def __init__(self, halted: str | None = None) -> None:
        self.answered: set[int] = set()
        self.counters: dict[str, int] = {}
        self.halted = halted
        self.transactions = 0
        self.steal: set[int] = set()  # lines another delivery answers while this one calls
        self.marks: dict[str, SendingMark] = {}
        self.marked_before_call: list[int] = []

    def job_state(self, job_id: str) -> JobState:
        return JobState(budget_month="2026-12", halted=self.halted)

    def answered_lines(self, job_id: str, lines: Iterable[int]) -> set[int]:
        return self.answered & set(lines)

    def mark_sending(self, job_id, invocation, lines, *, until) -> None:
        old = self.marks.get(invocation)
        marked = frozenset(lines) | (old.lines if old else frozenset())
        self.marks[invocation] = SendingMark(invocation, marked, until, old.since if old else "2026-12-02T18:00:00Z")
        self.marked_before_call += list(lines)

    def sending_marks(self, job_id) -> list[SendingMark]:
        return list(self.marks.values())

    def record_answers(self, job_id, *, lines, counters, also=(), finished_sending=None) -> set[int]:
        if finished_sending:
            self.marks.pop(finished_sending, None)
        lines = set(lines)
        if self.steal & lines:
            self.answered |= self.steal
            self.steal = set()
        duplicates = lines & self.answered
        if duplicates:
            return duplicates
        self.transactions += 1
        self.answered |= lines
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return set()

    def halt_job(self, job_id: str, reason: str) -> None:
        self.halted = reason


class FakeBudgets:
    def __init__(self, cap_nano: int | None = None) -> None:
        self.cap = cap_nano
        self.committed = 0

    def usage(self, job_id, month):
        return ScopeUsage("job", self.cap, self.committed), ScopeUsage("monthly", None, 0)

    def take(self, job_id, month, estimate_nano) -> bool:
        if self.cap is not None and self.committed + estimate_nano > self.cap:
            return False
        self.committed += estimate_nano
        return True

    def month_settle_update(self, month, *, reserved_nano, actual_nano) -> dict:
        return {"month": month, "delta": actual_nano - reserved_nano}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0


class FakeLimiter:
    """The domain's bucket in memory, on a clock the test moves."""

    def __init__(self, clock: Clock, limits: Limits = PROVIDER_LIMITS, learned: bool = True) -> None:
        self.clock = clock
        self.shape = BucketShape(safety=1.0, burst_seconds=1.0)
        self.state = BucketState.full(limits, self.shape, clock.now, learned=learned)
        self.pauses: list[float] = []
        self.observed = 0

    def acquire(self, model: str, costs: Sequence[int], *, at_most: int) -> Grant:
        grant = take(self.state, self.shape, costs, self.clock.now, at_most=at_most)
        self.state = grant.state
        return grant

    def observe(self, model, headers) -> None:
        self.observed += 1
        self.state = relearned(self.state, self.shape, self.clock.now, self.state.limits, None)

    def pause(self, model, seconds, headers=None) -> None:
        self.pauses.append(seconds)
        self.state = paused(self.state, self.shape, self.clock.now, seconds)
        self.clock.now += seconds  # the test's time passes while the use case waits it out


class FakeCircuit:
    def __init__(self) -> None:
        self.failures = 0

    def before_call(self, model) -> None: ...

    def succeeded(self, model) -> None: ...

    def failed(self, model) -> None:
        self.failures += 1


class ScriptedProvider:
    """Answers each custom_id from its script, in turn; 200 when the script runs out."""

    def __init__(self, script: dict[str, list[ProviderResponse]] | None = None) -> None:
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.calls: list[str] = []

    def call(self, url, body, *, client_request_id=None) -> ProviderResponse:
        self.calls.append(client_request_id)
        answers = self.script.get(client_request_id)
        return answers.pop(0) if answers else ok()


class FakeSpool:
    def __init__(self) -> None:
        self.objects: list[list[dict]] = []

    def write(self, job_id, records) -> None:
        self.objects.append([orjson.loads(orjson.dumps(r)) for r in records])

    def records(self) -> list[dict]:
        return [record for objects in self.objects for record in objects]


class FakeQueue:
    def __init__(self) -> None:
        self.requeued: list[tuple[str, float]] = []
        self.retried: list[tuple[str, float]] = []

    def requeue_all(self, bodies) -> None:
        self.requeued += list(bodies)

    def retry_all_in(self, receipts) -> None:
        self.retried += list(receipts)


def deliveries(count: int, *, token_cost: int = 100, receive_count: int = 1, start: int = 1) -> list[Delivery]:
    found = []
    for line in range(start, start + count):
        request = RealtimeRequest(
            "job-1", line, f"req-{line}", "/v1/chat/completions", MODEL, {"model": MODEL}, token_cost
        )
        found.append(Delivery(f"m{line}", f"r{line}", receive_count, f'{{"line": {line}}}', request))
    return found


@pytest.fixture
def world():
    clock = Clock()
    parts = {
        "jobs": FakeJobs(),
        "budgets": FakeBudgets(),
        "limiter": FakeLimiter(clock),
        "circuit": FakeCircuit(),
        "provider": ScriptedProvider(),
        "spool": FakeSpool(),
        "queue": FakeQueue(),
    }
    return clock, parts


def work(parts, items, **overrides) -> RealtimeWork:
    settings = WorkSettings(
        concurrent_calls=8,
        max_pace_wait_seconds=2.0,
        max_receive_count=3,
        backoff_base_seconds=1.0,
        backoff_max_seconds=30.0,
        max_rate_limited_attempts=3,
        seconds_per_request=0.01,
    )
    for name, value in overrides.items():
        settings = type(settings)(**{**settings.__dict__, name: value})
    use_case = RealtimeWork(
        budget_policy=BudgetPolicy(fallback_threshold=0.8, stop_threshold=1.0, fallback_models={}),
        prices=PriceBook(PRICES, 0.5),
        settings=settings,
        seconds_left=lambda: 900.0,
        now=lambda: "2026-12-02T18:00:00.000+00:00",
        rng=random.Random(7),
        invocation="this-invocation",
        wall_clock=lambda: NOW_EPOCH,
        **parts,
    )
    return use_case.work(items)


NOW_EPOCH = 1_796_000_000.0


def test_lines_are_marked_as_being_sent_before_their_calls_and_the_mark_goes_with_the_answers(world):
    _, parts = world
    work(parts, deliveries(3))
    assert sorted(parts["jobs"].marked_before_call) == [1, 2, 3]
    assert parts["jobs"].marks == {}  # removed in the answers' transaction
    assert sorted(parts["provider"].calls) == ["req-1", "req-2", "req-3"]


def test_a_line_another_live_invocation_is_sending_comes_back_once_that_one_has_surely_ended(world):
    _, parts = world
    parts["jobs"].marks["other"] = SendingMark("other", frozenset({2}), NOW_EPOCH + 60, "2026-12-02T17:59:00Z")
    report = work(parts, deliveries(3))
    assert sorted(parts["provider"].calls) == ["req-1", "req-3"]
    [(body, delay)] = parts["queue"].requeued
    assert body == '{"line": 2}' and 61 <= delay <= 62 and report.answered == 2


def test_a_line_a_dead_invocation_left_unanswered_is_not_paid_twice_but_ends_in_doubt(world):
    _, parts = world
    parts["jobs"].marks["killed"] = SendingMark("killed", frozenset({1, 2}), NOW_EPOCH - 1, "2026-12-02T17:58:00Z")
    parts["jobs"].answered = {1}  # its answer for line 1 was recorded before it died
    work(parts, deliveries(3))
    assert parts["provider"].calls == ["req-3"]
    [doubt] = [r for r in parts["spool"].records() if r["line"] == 2]
    assert doubt["code"] == "in_doubt" and "2026-12-02T17:58:00Z" in doubt["message"]
    assert parts["jobs"].answered == {1, 2, 3} and parts["jobs"].counters["realtime_failed"] == 1


def test_with_resend_in_doubt_a_dead_invocations_line_is_sent_again(world):
    _, parts = world
    parts["jobs"].marks["killed"] = SendingMark("killed", frozenset({2}), NOW_EPOCH - 1, "2026-12-02T17:58:00Z")
    work(parts, deliveries(2), resend_in_doubt=True)
    assert sorted(parts["provider"].calls) == ["req-1", "req-2"]
    assert all(r["code"] != "in_doubt" for r in parts["spool"].records() if "code" in r)


def test_a_batch_is_called_once_per_request_and_recorded_in_one_object_and_one_transaction(world):
    _, parts = world
    report = work(parts, deliveries(20))
    assert sorted(parts["provider"].calls) == sorted(f"req-{n}" for n in range(1, 21))
    assert report.answered == 20 and report.retry_message_ids == [] and report.requeued == 0
    assert len(parts["spool"].objects) == 1 and parts["jobs"].transactions == 1
    assert parts["jobs"].counters["realtime_done"] == 20
    assert parts["jobs"].counters["realtime_input_tokens"] == 200
    assert {r["line"] for r in parts["spool"].records()} == set(range(1, 21))


def test_a_line_already_answered_is_never_sent_again(world):
    _, parts = world
    parts["jobs"].answered = {1, 2}
    work(parts, deliveries(4))
    assert sorted(parts["provider"].calls) == ["req-3", "req-4"]
    assert parts["jobs"].counters["realtime_done"] == 2


def test_a_line_answered_meanwhile_by_another_delivery_is_counted_once(world):
    _, parts = world
    parts["jobs"].answered = set()
    parts["jobs"].steal = {2}
    work(parts, deliveries(3))
    assert parts["jobs"].counters["realtime_done"] == 2  # lines 1 and 3; line 2 counted by the other delivery


def test_a_rate_limit_429_pauses_every_worker_for_its_retry_after_and_the_request_then_succeeds(world):
    _, parts = world
    limited = error(429, "rate_limit_exceeded", {"retry-after-ms": "1500"})
    parts["provider"].script = {"req-1": [limited]}
    report = work(parts, deliveries(1))
    assert parts["limiter"].pauses == [1.5]
    assert parts["provider"].calls == ["req-1", "req-1"]
    assert report.rate_limited == 1 and report.answered == 1
    assert parts["jobs"].counters.get("realtime_failed", 0) == 0


def test_insufficient_quota_stops_the_job_and_leaves_its_requests_unsent_for_a_resubmission(world):
    _, parts = world
    parts["provider"].script = {"req-1": [error(429, "insufficient_quota")]}
    report = work(parts, deliveries(1), concurrent_calls=1)
    assert parts["jobs"].halted.startswith("insufficient_quota")
    assert report.answered == 0 and report.not_sent == 1
    assert parts["jobs"].answered == set()  # nothing marked answered: a resubmission sends it
    [record] = parts["spool"].records()
    assert record["code"] == "insufficient_quota" and record["unsent"] is True


def test_the_requests_of_a_stopped_job_are_recorded_as_not_sent_without_a_call(world):
    _, parts = world
    parts["jobs"].halted = "cancelled by the user"
    report = work(parts, deliveries(3))
    assert parts["provider"].calls == []
    assert report.not_sent == 3 and parts["jobs"].counters["realtime_unsent"] == 3
    assert {r["code"] for r in parts["spool"].records()} == {"job_halted"}


def test_server_errors_come_back_after_a_backoff_then_end_as_errors_on_their_last_delivery(world):
    _, parts = world
    parts["provider"].script = {"req-1": [error(503)], "req-2": [error(503)]}
    first = deliveries(1)
    last = deliveries(1, receive_count=3, start=2)
    report = work(parts, [*first, *last])
    assert report.retry_message_ids == ["m1"]
    [(handle, delay)] = parts["queue"].retried
    assert handle == "r1" and 0.5 <= delay <= 1.0
    [record] = parts["spool"].records()
    assert record["line"] == 2 and record["code"] == "retries_exhausted"
    assert parts["circuit"].failures == 2


class RaisingFor(ScriptedProvider):
    """A client that raises before the request leaves, for one custom_id (as a header it cannot encode did)."""

    def __init__(self, bad_id: str) -> None:
        super().__init__()
        self.bad_id = bad_id

    def call(self, url, body, *, client_request_id=None) -> ProviderResponse:
        if client_request_id == self.bad_id:
            raise UnicodeEncodeError("ascii", client_request_id, 0, 1, "ordinal not in range(128)")
        return super().call(url, body, client_request_id=client_request_id)


def test_a_call_that_raises_fails_its_own_request_and_the_rest_of_the_batch_is_answered(world):
    _, parts = world
    parts["provider"] = RaisingFor("req-2")
    first = work(parts, deliveries(3))
    assert first.answered == 2 and first.retry_message_ids == ["m2"]
    parts["provider"] = RaisingFor("req-4")
    last_delivery = work(parts, deliveries(1, receive_count=3, start=4))
    assert last_delivery.retry_message_ids == []
    [last] = [r for r in parts["spool"].records() if r["line"] == 4]
    assert last["code"] == "retries_exhausted" and "UnicodeEncodeError" in last["message"]


def test_a_request_the_provider_refuses_for_good_is_answered_with_its_reason(world):
    _, parts = world
    parts["provider"].script = {"req-1": [error(400, "invalid_request_error")]}
    work(parts, deliveries(1))
    [record] = parts["spool"].records()
    assert record["code"] == "invalid_request_error" and record["status_code"] == 400
    assert parts["jobs"].counters["realtime_failed"] == 1


def test_without_room_for_long_requests_go_back_to_the_queue_as_new_messages_spread_over_time(world):
    clock, parts = world
    parts["limiter"] = FakeLimiter(clock, limits=Limits(60, 480_000))  # one request a second
    report = work(parts, deliveries(6), max_pace_wait_seconds=0.5, seconds_per_request=1.0)
    assert len(parts["provider"].calls) == 1  # the bucket held one request
    assert report.requeued == 5 and report.retry_message_ids == []  # waiting uses no delivery
    delays = [delay for _, delay in parts["queue"].requeued]
    assert delays == sorted(delays) and delays[0] >= 1.0


def test_before_the_limits_are_learned_one_request_goes_first(world):
    clock, parts = world
    parts["limiter"] = FakeLimiter(clock, learned=False)
    report = work(parts, deliveries(5))
    assert report.answered == 5
    assert parts["limiter"].observed == 5 and parts["limiter"].state.learned


def test_past_the_budget_requests_are_not_sent_and_say_why(world):
    _, parts = world
    parts["budgets"] = FakeBudgets(cap_nano=1)
    report = work(parts, deliveries(2))
    assert parts["provider"].calls == []
    assert report.not_sent == 2
    assert {r["code"] for r in parts["spool"].records()} == {"budget_exhausted"}


def test_a_batch_stops_at_the_stop_threshold_as_if_its_requests_came_one_by_one(world):
    _, parts = world
    budgets = parts["budgets"] = FakeBudgets(cap_nano=10**6)  # $0.001
    policy_cap = budgets.cap
    report = work(parts, deliveries(40, token_cost=100))
    price = PRICES[MODEL]
    worst_case = realtime_ceiling_nano(price.input_per_million, price.output_per_million, 100)
    sent = len(parts["provider"].calls)
    # As many worst cases as fit under the cap (the stop threshold is the cap itself here), and no more.
    assert sent == policy_cap // worst_case and report.not_sent == 40 - sent
    reserved_when_stopped = budgets.committed
    assert reserved_when_stopped <= policy_cap  # never past the cap
    assert {r["code"] for r in parts["spool"].records() if r.get("unsent")} == {"budget_exhausted"}


def test_answers_are_recorded_as_they_come_so_a_worker_that_dies_leaves_little_in_doubt(world):
    _, parts = world
    parts["provider"] = SlowProvider(seconds=0.02)
    report = work(parts, deliveries(6), concurrent_calls=2, record_every_seconds=0.01)
    assert report.answered == 6 and parts["jobs"].answered == {1, 2, 3, 4, 5, 6}
    assert len(parts["spool"].objects) >= 2 and sum(map(len, parts["spool"].objects)) == 6  # more than one record
    assert parts["jobs"].marks == {} and parts["jobs"].counters["realtime_succeeded"] == 6


class SlowProvider(ScriptedProvider):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def call(self, url, body, *, client_request_id=None) -> ProviderResponse:
        time.sleep(self.seconds)
        return super().call(url, body, client_request_id=client_request_id)


def test_with_too_little_time_left_no_call_starts_and_every_request_goes_back_to_the_queue(world):
    _, parts = world
    settings = WorkSettings(
        concurrent_calls=8,
        max_pace_wait_seconds=2.0,
        max_receive_count=3,
        backoff_base_seconds=1.0,
        backoff_max_seconds=30.0,
        max_rate_limited_attempts=3,
        seconds_per_request=0.01,
        last_call_seconds=2.0,
    )
    use_case = RealtimeWork(
        budget_policy=BudgetPolicy(fallback_threshold=0.8, stop_threshold=1.0, fallback_models={}),
        prices=PriceBook(PRICES, 0.5),
        settings=settings,
        seconds_left=lambda: 1.5,  # the invocation is about to end (its timeout, or a local run stopping)
        now=lambda: "2026-12-02T18:00:00.000+00:00",
        rng=random.Random(7),
        invocation="this-invocation",
        wall_clock=lambda: NOW_EPOCH,
        **parts,
    )
    report = use_case.work(deliveries(5))
    assert parts["provider"].calls == [], "a call that the invocation's end would cut off is not started"
    assert sorted(body for body, _ in parts["queue"].requeued) == sorted(f'{{"line": {n}}}' for n in range(1, 6))
    assert report.answered == 0 and parts["jobs"].answered == set()


def test_a_job_cancelled_while_an_invocation_sends_gets_no_more_calls_from_it(world):
    _, parts = world

    class CancelledAfterThree(ScriptedProvider):
        def call(self, url, body, *, client_request_id=None) -> ProviderResponse:
            if len(self.calls) == 2:
                parts["jobs"].halted = "cancelled by the user"  # `batchline cancel`, meanwhile
            return super().call(url, body, client_request_id=client_request_id)

    parts["provider"] = CancelledAfterThree()
    work(parts, deliveries(10), concurrent_calls=1, record_every_seconds=0.0)
    assert len(parts["provider"].calls) == 3, "the calls after the cancel was seen were not made"
    unsent = [r for r in parts["spool"].records() if r.get("code") == "job_halted"]
    assert len(unsent) == 7 and all("cancelled by the user" in r["message"] for r in unsent)


class TimedProvider(ScriptedProvider):
    """Answers every request, taking `seconds[custom_id]` (default none) to do it."""

    def __init__(self, seconds: dict[str, float]) -> None:
        super().__init__()
        self.seconds = seconds

    def call(self, url, body, *, client_request_id=None) -> ProviderResponse:
        time.sleep(self.seconds.get(client_request_id, 0.0))
        return super().call(url, body, client_request_id=client_request_id)


def test_each_answer_records_how_long_its_call_took_so_the_report_can_show_the_slowest(world):
    _, parts = world
    parts["provider"] = TimedProvider({"req-2": 0.05})
    work(parts, deliveries(3))
    timed = {record["custom_id"]: record["latency_seconds"] for record in parts["spool"].records()}
    assert set(timed) == {"req-1", "req-2", "req-3"}
    assert timed["req-2"] >= 0.05 > max(timed["req-1"], timed["req-3"])


# -- structured answers: an answer off its JSON Schema is paid for, asked again, then reported ---------

LABEL_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "label",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["label"],
            "additionalProperties": False,
        },
    },
}


def structured(line: int, *, schema_failures: int = 0) -> Delivery:
    body = {"model": MODEL, "messages": [], "response_format": LABEL_FORMAT}
    request = RealtimeRequest(
        "job-1", line, f"req-{line}", "/v1/chat/completions", MODEL, body, 100, schema_failures=schema_failures
    )
    message = {"job_id": "job-1", "line": line, "custom_id": f"req-{line}", "url": "/v1/chat/completions"}
    message |= {"model": MODEL, "body": body, "token_cost": 100}
    if schema_failures:
        message["schema_failures"] = schema_failures
    return Delivery(f"m{line}", f"r{line}", 1, orjson.dumps(message).decode(), request)


def answer(content: str | None, *, refusal: str | None = None) -> ProviderResponse:
    body = {
        "object": "chat.completion",
        "choices": [{"message": {"content": content, "refusal": refusal}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
    }
    return ProviderResponse(200, OK_HEADERS, body)


ONE_ANSWER_NANO = round(PriceBook(PRICES, 0.5).realtime_cost(MODEL, 10, 3) * 1e9)


def test_an_answer_off_its_schema_is_paid_for_and_its_request_goes_back_to_the_queue(world):
    _, parts = world
    parts["provider"].script = {"req-1": [answer('{"label": "maybe"}')], "req-2": [answer('{"label": "yes"}')]}

    report = work(parts, [structured(1), structured(2)])

    jobs, counters = parts["jobs"], parts["jobs"].counters
    assert jobs.answered == {2}, "the line off its schema is not answered yet"
    [(raw, delay)] = parts["queue"].requeued
    assert orjson.loads(raw)["schema_failures"] == 1 and orjson.loads(raw)["line"] == 1 and 1 <= delay <= 2
    [result] = parts["spool"].records()
    assert result["line"] == 2 and result["parsed"] == {"label": "yes"}
    assert counters["schema_retries"] == 1 and report.schema_retries == 1
    assert (counters["realtime_done"], counters["realtime_succeeded"], counters.get("realtime_failed", 0)) == (1, 1, 0)
    # Both calls were billed: the tokens, the cost and the budget's spend count both.
    assert counters["realtime_input_tokens"] == 20 and counters["realtime_cost_nano_usd"] == 2 * ONE_ANSWER_NANO
    assert counters["spent_nano"] == 2 * ONE_ANSWER_NANO
    assert counters["committed_nano"] == 2 * ONE_ANSWER_NANO - parts["budgets"].committed, "reservations settled"


def test_the_request_asked_again_comes_back_knowing_how_often_it_failed_and_then_passes(world):
    from batchline.workflow.realtime_messages import delivery_of

    _, parts = world
    parts["provider"].script = {"req-1": [answer("not json"), answer('{"label": "no"}')]}
    work(parts, [structured(1)])
    [(raw, _)] = parts["queue"].requeued
    again = delivery_of({"body": raw, "messageId": "m1b", "receiptHandle": "r1b"}, lambda key: {})
    assert again.request.schema_failures == 1 and again.request.body["response_format"] == LABEL_FORMAT

    work(parts, [again])

    counters = parts["jobs"].counters
    records = parts["spool"].records()
    assert [r["parsed"] for r in records] == [{"label": "no"}]
    assert (counters["realtime_done"], counters["realtime_succeeded"], counters["schema_retries"]) == (1, 1, 1)
    assert counters["realtime_cost_nano_usd"] == 2 * ONE_ANSWER_NANO and counters["spent_nano"] == 2 * ONE_ANSWER_NANO
    assert len(parts["queue"].requeued) == 1, "not asked a third time"


def test_the_last_answer_off_its_schema_is_a_final_error_with_the_validation_message(world):
    _, parts = world
    parts["provider"].script = {"req-1": [answer('{"label": "maybe"}')]}

    work(parts, [structured(1, schema_failures=2)], schema_attempts=3)

    assert parts["queue"].requeued == []
    [error] = parts["spool"].records()
    assert error["code"] == "schema_invalid" and error["route"] == "realtime"
    assert error["message"] == "$.label: 'maybe' is not one of ['yes', 'no'] (after 3 answers)"
    assert error["usage"] == {"prompt_tokens": 10, "completion_tokens": 3}
    counters = parts["jobs"].counters
    assert (counters["realtime_done"], counters["realtime_failed"], counters.get("schema_retries", 0)) == (1, 1, 0)
    assert counters["realtime_cost_nano_usd"] == ONE_ANSWER_NANO == counters["spent_nano"], "billed, counted once"


def test_a_refusal_is_final_at_once(world):
    _, parts = world
    parts["provider"].script = {"req-1": [answer(None, refusal="I can't help with that.")]}

    work(parts, [structured(1)])

    assert parts["queue"].requeued == []
    [error] = parts["spool"].records()
    assert error["code"] == "refusal" and "I can't help with that." in error["message"]
    assert parts["jobs"].counters["realtime_failed"] == 1
