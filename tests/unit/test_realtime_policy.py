"""How one realtime request is called: retried, waited on, stopped or failed as the provider asks."""

from __future__ import annotations

import random

import pytest
from batchline.domain.realtime import CallPolicy, ProviderResponse, RealtimeRequest, RetryLater, execute

REQUEST = RealtimeRequest("job", 3, "row-3", "/v1/chat/completions", "gpt-4o-mini", {"model": "gpt-4o-mini"}, 120)


def ok() -> ProviderResponse:
    return ProviderResponse(200, {"x-ratelimit-remaining-tokens": "10"}, {"id": "chatcmpl-1", "usage": {}})


def error(status: int, code: str | None, headers: dict | None = None) -> ProviderResponse:
    return ProviderResponse(status, headers or {}, {"error": {"message": f"said {status}", "code": code}})


class ScriptedProvider:
    def __init__(self, *responses: ProviderResponse) -> None:
        self.responses = list(responses)
        self.calls = 0

    def call(self, url: str, body: dict, *, client_request_id: str | None = None) -> ProviderResponse:
        assert client_request_id == "row-3"
        self.calls += 1
        return self.responses.pop(0)


class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired: list[int] = []
        self.paused: list[float] = []
        self.observed: list[dict] = []

    def acquire(self, model: str, tokens: int) -> None:
        self.acquired.append(tokens)

    def observe(self, model: str, headers: dict) -> None:
        self.observed.append(headers)

    def pause(self, model: str, seconds: float) -> None:
        self.paused.append(seconds)


class RecordingCircuit:
    def __init__(self) -> None:
        self.failures = 0
        self.successes = 0

    def before_call(self, model: str) -> None:
        pass

    def succeeded(self, model: str) -> None:
        self.successes += 1

    def failed(self, model: str) -> None:
        self.failures += 1


def run(*responses: ProviderResponse, attempts: int = 4):
    provider, limiter, circuit, slept = ScriptedProvider(*responses), RecordingLimiter(), RecordingCircuit(), []
    policy = CallPolicy(
        max_attempts=attempts, backoff_base_seconds=0.5, backoff_max_seconds=8, sleep=slept.append, rng=random.Random(7)
    )
    outcome = execute(REQUEST, provider=provider, limiter=limiter, circuit=circuit, policy=policy)
    return outcome, provider, limiter, circuit, slept


def test_every_call_is_charged_its_full_token_cost_to_the_shared_limiter():
    outcome, provider, limiter, circuit, _ = run(ok())
    assert outcome.succeeded and provider.calls == 1
    assert limiter.acquired == [120] and limiter.observed and circuit.successes == 1


def test_a_rate_limit_429_pauses_every_worker_as_long_as_retry_after_says_then_retries():
    outcome, provider, limiter, _, _ = run(error(429, "rate_limit_exceeded", {"retry-after-ms": "1500"}), ok())
    assert outcome.succeeded and provider.calls == 2
    assert limiter.paused == [1.5]
    assert limiter.acquired == [120, 120]  # the retry is charged again: the 429 cost nothing at the provider


def test_insufficient_quota_stops_the_job_and_retries_nothing():
    outcome, provider, _, _, slept = run(error(429, "insufficient_quota"))
    assert provider.calls == 1 and slept == []
    assert not outcome.succeeded and outcome.halts_job and outcome.code == "insufficient_quota"


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 0])
def test_transient_failures_back_off_with_jitter_and_count_against_the_circuit(status):
    outcome, provider, _, circuit, slept = run(error(status, None), error(status, None), ok())
    assert outcome.succeeded and provider.calls == 3 and circuit.failures == 2
    assert len(slept) == 2 and 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 1.0


def test_other_client_errors_are_final_for_that_request():
    outcome, provider, _, circuit, _ = run(error(400, "invalid_value"))
    assert provider.calls == 1 and circuit.failures == 0
    assert (outcome.succeeded, outcome.code, outcome.status_code, outcome.message) == (
        False,
        "invalid_value",
        400,
        "said 400",
    )


def test_a_request_still_failing_after_its_attempts_goes_back_to_the_queue():
    with pytest.raises(RetryLater) as raised:
        run(error(503, None), error(503, None), attempts=2)
    assert raised.value.delay_seconds == 8
