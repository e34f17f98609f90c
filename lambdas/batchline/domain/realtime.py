"""One realtime request, called at the shared rate limit, retried the way the provider asks.

The policy, with the outside world behind small ports so it is tested with fakes:
- before each call: the shared circuit must be closed (or this worker holds the probe), and the
  shared rate limiter must grant the request's token cost (prompt tokens + max output);
- 200: success; the response headers refine the limiter's view of the window;
- 429 rate_limit_exceeded: every worker waits what ``retry-after`` says, then this one tries again;
- 429 insufficient_quota: the job stops, nothing is retried;
- 408, 409, 5xx, connection errors: jittered exponential backoff, counted by the circuit;
- any other 4xx: a final error for that request.
After `max_attempts` the request is handed back (RetryLater) for SQS to redeliver.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchline.domain.errors import BatchlineError
from batchline.domain.outcomes import STAGE_PROVIDER

RETRYABLE_STATUSES = frozenset((408, 409))


@dataclass(frozen=True)
class ProviderResponse:
    status: int  # 0 when no HTTP answer came (connection error, timeout)
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class RealtimeRequest:
    job_id: str
    line: int
    custom_id: str
    url: str
    model: str
    body: dict
    token_cost: int  # prompt tokens + max output tokens: what the provider charges against TPM


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    body: Any = None  # the provider's response body on success
    code: str | None = None
    message: str | None = None
    status_code: int | None = None
    halts_job: bool = False
    attempts: int = 1
    stage: str = STAGE_PROVIDER  # "budget" when the request was never sent because the budget ran out


class RetryLater(BatchlineError):
    """Not done yet, and not a failure of the request: give the message back to the queue.

    `delay_seconds` says when trying again makes sense (the next rate window, the end of a
    circuit's cool-down), so the message need not wait out the whole visibility timeout.
    `provider_failed` tells a request the provider kept failing (which may use up its deliveries)
    from one that only waited its turn (no room in the window, circuit open), which must not.
    """

    def __init__(self, message: str, *, delay_seconds: float = 30.0, provider_failed: bool = False) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds
        self.provider_failed = provider_failed


class Provider(Protocol):
    def call(self, url: str, body: dict, *, client_request_id: str | None = None) -> ProviderResponse: ...


class RateLimiter(Protocol):
    def acquire(self, model: str, tokens: int) -> None:
        """Block until the shared window grants one request of `tokens`; raise RetryLater past a deadline."""

    def observe(self, model: str, headers: dict[str, str]) -> None:
        """Take the provider's own view of the window (x-ratelimit-* headers) into account."""

    def pause(self, model: str, seconds: float) -> None:
        """The provider said 429 and when to come back: no worker calls this model before then."""


class CircuitBreaker(Protocol):
    def before_call(self, model: str) -> None:
        """Raise RetryLater while the circuit is open and this worker is not the probe."""

    def succeeded(self, model: str) -> None: ...

    def failed(self, model: str) -> None: ...


@dataclass
class CallPolicy:
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    sleep: Callable[[float], None]
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """Full jitter: spread retries so that many workers do not retry in step."""
        return self.rng.uniform(0, min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1)))


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


def _error_detail(body: Any) -> dict:
    detail = body.get("error") if isinstance(body, dict) else None
    return detail if isinstance(detail, dict) else {}


def execute(
    request: RealtimeRequest,
    *,
    provider: Provider,
    limiter: RateLimiter,
    circuit: CircuitBreaker,
    policy: CallPolicy,
) -> Outcome:
    for attempt in range(1, policy.max_attempts + 1):
        circuit.before_call(request.model)
        limiter.acquire(request.model, request.token_cost)
        response = provider.call(request.url, request.body, client_request_id=request.custom_id)
        status = response.status
        if status == 200:
            circuit.succeeded(request.model)
            limiter.observe(request.model, response.headers)
            return Outcome(succeeded=True, body=response.body, status_code=200, attempts=attempt)
        detail = _error_detail(response.body)
        code = detail.get("code") or detail.get("type")
        message = str(detail.get("message") or f"HTTP {status}")
        if status == 429 and code == "insufficient_quota":
            return Outcome(False, None, "insufficient_quota", message, 429, halts_job=True, attempts=attempt)
        if status == 429:
            wait = retry_after_seconds(response.headers)
            limiter.pause(request.model, wait if wait is not None else policy.backoff(attempt))
            continue
        if status == 0 or status in RETRYABLE_STATUSES or status >= 500:
            circuit.failed(request.model)
            policy.sleep(policy.backoff(attempt))
            continue
        return Outcome(False, None, str(code or f"http_{status}"), message, status, attempts=attempt)
    raise RetryLater(
        f"no answer for {request.custom_id} after {policy.max_attempts} attempts",
        delay_seconds=policy.backoff_max_seconds,
        provider_failed=True,
    )
