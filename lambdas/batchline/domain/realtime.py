"""Realtime requests and what the provider's answer to one means for it.

The rules, with no I/O (the use case in workflow/realtime_work.py applies them):
- 200: success; the headers teach the shared limiter the provider's real limits;
- 429 rate_limit_exceeded: every worker holds back as long as ``retry-after`` says, then the
  request is tried again: waiting is never a failure of the request;
- 429 insufficient_quota: not a rate limit: the job's realtime sending stops, and its requests stay
  unsent (a resubmission sends them);
- 408, 409, 5xx, no answer at all: transient, retried later with jittered backoff, counted by the
  circuit breaker;
- any other 4xx: final for that request.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from batchline.domain.errors import BatchlineError
from batchline.domain.rate_bucket import Grant

RETRYABLE_STATUSES = frozenset((408, 409))


@dataclass(frozen=True)
class ProviderResponse:
    status: int  # 0 when no HTTP answer came (connection error, timeout)
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class RealtimeRequest:
    """One queued request, as its message carries it."""

    job_id: str
    line: int
    custom_id: str
    url: str
    model: str
    body: dict[str, Any]
    token_cost: int  # prompt tokens + max output tokens: what the provider charges against TPM
    schema_failures: int = 0  # answers to it so far that did not follow the JSON Schema it asks for


@dataclass(frozen=True)
class JobState:
    """What a worker must know of a request's job before sending it."""

    budget_month: str
    halted: str | None  # why the job's sending stopped (cancelled, quota), if it did


@dataclass(frozen=True)
class SendingMark:
    """Lines an invocation began to send, and the moment by which it has surely ended (its deadline).

    Written before the calls and removed with the answers, in the same transaction: a mark that
    outlives its deadline belongs to an invocation that died mid-call (a crash, a timeout, a local
    run killed), and its lines with no answer may have been answered and billed by the provider.
    """

    invocation: str
    lines: frozenset[int]
    until: float  # epoch seconds
    since: str  # when the first of them was sent (ISO 8601)


class Verdict(Enum):
    SUCCEEDED = "succeeded"
    RATE_LIMITED = "rate_limited"  # wait, then the same request again
    QUOTA_EXHAUSTED = "quota_exhausted"  # stop the job's sending; the request stays unsent
    TRANSIENT = "transient"  # back off and try again later
    FAILED = "failed"  # the provider refused this request for good


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    code: str | None = None
    message: str | None = None
    retry_after_seconds: float | None = None


class RetryLater(BatchlineError):
    """Not done yet, and not a failure of the request: give it back to the queue for later."""

    def __init__(self, message: str, *, delay_seconds: float = 30.0) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return float(lowered["retry-after-ms"]) / 1000
        if "retry-after" in lowered:
            return float(lowered["retry-after"])
    except ValueError:
        return None
    return None


def _error_detail(body: Any) -> dict[str, Any]:
    detail = body.get("error") if isinstance(body, dict) else None
    return detail if isinstance(detail, dict) else {}


def judge(response: ProviderResponse) -> Judgement:
    """What one answer of the provider means for its request."""
    status = response.status
    if status == 200:
        return Judgement(Verdict.SUCCEEDED)
    detail = _error_detail(response.body)
    code = detail.get("code") or detail.get("type")
    message = str(detail.get("message") or f"HTTP {status}")
    if status == 429 and code == "insufficient_quota":
        return Judgement(Verdict.QUOTA_EXHAUSTED, "insufficient_quota", message)
    if status == 429:
        return Judgement(
            Verdict.RATE_LIMITED, str(code or "rate_limit_exceeded"), message, retry_after_seconds(response.headers)
        )
    if status == 0 or status in RETRYABLE_STATUSES or status >= 500:
        return Judgement(Verdict.TRANSIENT, str(code or f"http_{status}"), message)
    return Judgement(Verdict.FAILED, str(code or f"http_{status}"), message)


def backoff_seconds(attempt: int, *, base: float, ceiling: float, rng: random.Random) -> float:
    """Full jitter: spread retries so that many workers do not retry in step."""
    return rng.uniform(base / 2, min(ceiling, base * 2 ** max(0, attempt - 1)))


class Provider(Protocol):
    def call(self, url: str, body: dict[str, Any], *, client_request_id: str | None = None) -> ProviderResponse: ...


class RateLimiter(Protocol):
    def acquire(self, model: str, costs: Sequence[int], *, at_most: int) -> Grant:
        """Grant as many of `costs` (in order) as the shared limit allows now, and say when the next fits."""

    def observe(self, model: str, headers: dict[str, str]) -> None:
        """Take the provider's own view of its limits (x-ratelimit-* headers) into account."""

    def pause(self, model: str, seconds: float, headers: dict[str, str] | None = None) -> None:
        """The provider said 429 and when to come back: no worker calls this model before then."""


class CircuitBreaker(Protocol):
    def before_call(self, model: str) -> None:
        """Raise RetryLater while the circuit is open and this worker is not the probe."""

    def succeeded(self, model: str) -> None: ...

    def failed(self, model: str) -> None: ...
