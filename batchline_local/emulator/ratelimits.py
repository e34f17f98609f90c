"""Per-model rate limits on the realtime endpoints, enforced the way OpenAI enforces them.

A request costs 1 request and its prompt tokens plus the output it may produce (``max_tokens`` or
the like, else ``assumed_output_tokens``). Each model has its own limits. A request refused is
answered 429 ``rate_limit_exceeded`` and consumes nothing; the refusal says when to come back
(``retry-after-ms``, ``retry-after``). ``settings.emulator.rate_limit_algorithm`` chooses how:

``token_bucket`` (the default; what OpenAI does). Limits are quantized: a model has a bucket of
requests and a bucket of tokens, each refilled continuously at its per-minute limit / 60 per
second and holding at most ``burst_seconds`` of that refill (1 s by default: 480,000 TPM is a
bucket of 8,000 tokens refilled at 8,000 per second). Both start full. A request is admitted only
if both buckets hold enough for it; else the 429 says how long until both will. So a client that
spends a minute's allowance in one burst is refused past one quantum's worth although it is under
the per-minute figure, and a client sending at the refill rate is never refused.

- A request costing more than the bucket holds but not more than the per-minute limit is not
  refused for good (OpenAI would run it): it is admitted once the bucket is full, and the bucket
  goes into debt (its level below zero). The requests after it wait until the debt has refilled,
  so over time the model still gets no more than the refill rate.
- A request costing more than the per-minute limit can never run: it is refused as OpenAI does,
  "Request too large", with no promise that waiting helps.

Headers on every answer, as OpenAI sends them: ``x-ratelimit-limit-*`` are the per-minute limits;
``x-ratelimit-remaining-*`` is the per-minute view, the limit minus what was consumed and has not
yet refilled at limit / 60 per second (the level of a bucket as big as the per-minute limit,
beside the quantum bucket, which holds ``capacity`` minus the same amount); ``x-ratelimit-reset-*``
is the time until that view is full again, so a few milliseconds after one small request and the
consumed amount / (limit / 60) after heavy use. Durations are in OpenAI's format (``120ms``,
``1.5s``, ``6m0s``). The bucket arithmetic is exact (fractions, the clock read to the microsecond),
so on a fake clock a retry-after is exact and sending at exactly the refill rate always fits.

``fixed_window``. Time is cut into windows of ``rate_window_seconds`` aligned to the epoch (window
index = floor(now / window)); in each one a model may take ``requests_per_minute`` requests and
``tokens_per_minute`` tokens (per window, whatever the window's length), and a request that does
not fit in what is left waits for the next window. The headers give those budgets, what is left
of them, and the time to the window's end.

Statistics (``stats()``, ``GET /_emulator/stats``), what a benchmark reads: the algorithm and the
limits; per model the requests accepted and refused, the tokens charged, the emulator-clock times
of the first and last admitted request (the share of the token limit used while sending is
``tokens_charged / (tokens_per_minute / 60 * (last_admitted_at - first_admitted_at))``), and the
usage per window: the rate windows for fixed_window, windows of one second for token_bucket (whose
``tokens_per_window`` is then the refill of one second, ``tokens_per_minute / 60``).

Nothing else the emulator serves says what the limits are: clients learn them from these headers
and from the 429 messages, as they do from OpenAI.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from batchline.settings import EmulatorSettings

from .errors import RateLimited

ORGANIZATION = "org-emulator"
TOKEN_BUCKET = "token_bucket"
FIXED_WINDOW = "fixed_window"
MICROSECONDS = 1_000_000
_ZERO = Fraction(0)


def format_duration(seconds: float) -> str:
    """OpenAI's (Go's) duration format, rounded up to the millisecond: ``120ms``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def retry_after(seconds: float) -> dict[str, str]:
    """``retry-after-ms`` (milliseconds, rounded up) and ``retry-after`` (whole seconds, rounded up), consistent."""
    ms = max(1, math.ceil(round(seconds * 1000, 6)))
    return {"retry-after-ms": str(ms), "retry-after": str(math.ceil(ms / 1000))}


def _where(model: str) -> str:
    return f"{model} in organization {ORGANIZATION}"


def _too_large(model: str, limit: int, cost: int) -> str:
    # It could not fit even in an empty allowance: OpenAI says so rather than "try again".
    return (
        f"Request too large for {_where(model)} on tokens per min (TPM): Limit {limit}, "
        f"Requested {cost}. The input or output tokens must be reduced in order to run successfully."
    )


def _reached(model: str, limit_type: str, limit: int, used: int, requested: int, wait: float) -> str:
    per_min = "requests per min (RPM)" if limit_type == "requests" else "tokens per min (TPM)"
    return (
        f"Rate limit reached for {_where(model)} on {per_min}: Limit {limit}, "
        f"Used {used}, Requested {requested}. Please try again in {format_duration(wait)}."
    )


@dataclass
class _Window:
    start: float
    requests: int = 0
    tokens: int = 0
    refused: int = 0


@dataclass
class _ModelUsage:
    requests_ok: int = 0
    requests_429: int = 0
    requests_5xx: int = 0
    tokens_charged: int = 0
    first_admitted_at: float | None = None
    last_admitted_at: float | None = None
    windows: dict[int, _Window] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests_ok": self.requests_ok,
            "requests_429": self.requests_429,
            "requests_5xx": self.requests_5xx,
            "tokens_charged": self.tokens_charged,
            "first_admitted_at": self.first_admitted_at,
            "last_admitted_at": self.last_admitted_at,
            "windows": [
                {"window_start": w.start, "requests": w.requests, "tokens": w.tokens, "refused": w.refused}
                for _, w in sorted(self.windows.items())
            ],
        }


class RateLimiter:
    """What both algorithms share: the lock, the emulator's clock and the statistics.

    Thread-safe: every method takes the one lock, and reads the clock inside it.
    """

    algorithm = ""

    def __init__(
        self,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        stats_window_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.stats_window_seconds = stats_window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, _ModelUsage] = {}

    def admit(self, model: str, cost: int) -> dict[str, str]:
        """Charge one request of ``cost`` tokens to ``model`` and return the rate-limit headers.

        Raise RateLimited, charging nothing, when the request does not fit now.
        """
        with self._lock:
            now = self._clock()
            window = self._window(model, now)
            usage = self._usage[model]
            refusal = self._refusal(model, cost, now)
            if refusal is not None:
                window.refused += 1
                usage.requests_429 += 1
                raise refusal
            self._charge(model, cost, now)
            window.requests += 1
            window.tokens += cost
            usage.requests_ok += 1
            usage.tokens_charged += cost
            if usage.first_admitted_at is None:
                usage.first_admitted_at = now
            usage.last_admitted_at = now
            return self._headers(model, now)

    def headers(self, model: str) -> dict[str, str]:
        """The headers for ``model`` as things stand, charging nothing (for answers that are not charged)."""
        with self._lock:
            now = self._clock()
            self._window(model, now)
            return self._headers(model, now)

    def count_refusal(self, model: str, status: int) -> None:
        """Count an answer that was not the limiter's doing (an injected 429 or 5xx) in the statistics."""
        with self._lock:
            window = self._window(model, self._clock())
            usage = self._usage[model]
            if status == 429:
                usage.requests_429 += 1
                window.refused += 1
            else:
                usage.requests_5xx += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "algorithm": self.algorithm,
                "burst_seconds": self._burst_seconds(),
                "requests_per_minute": self.requests_per_minute,
                "tokens_per_minute": self.tokens_per_minute,
                "window_seconds": self.stats_window_seconds,
                **self._per_window(),
                "models": {model: usage.to_dict() for model, usage in sorted(self._usage.items())},
            }

    # ----- inside the lock ----------------------------------------------------------------------

    def _window(self, model: str, now: float) -> _Window:
        """The statistics window of ``model`` that ``now`` falls in (created, with the model, if new)."""
        index = math.floor(now / self.stats_window_seconds)
        windows = self._usage.setdefault(model, _ModelUsage()).windows
        window = windows.get(index)
        if window is None:
            window = windows[index] = _Window(start=index * self.stats_window_seconds)
        return window

    # What each algorithm decides.

    def _refusal(self, model: str, cost: int, now: float) -> RateLimited | None:
        raise NotImplementedError

    def _charge(self, model: str, cost: int, now: float) -> None:
        raise NotImplementedError

    def _headers(self, model: str, now: float) -> dict[str, str]:
        raise NotImplementedError

    def _burst_seconds(self) -> float | None:
        raise NotImplementedError

    def _per_window(self) -> dict[str, float]:
        """``requests_per_window`` and ``tokens_per_window``: what one statistics window allows."""
        raise NotImplementedError


class FixedWindowLimiter(RateLimiter):
    """Budgets per window aligned to the epoch; the statistics windows are the rate windows themselves."""

    algorithm = FIXED_WINDOW

    def __init__(self, *, requests: int, tokens: int, window_seconds: float, clock: Callable[[], float]) -> None:
        super().__init__(
            requests_per_minute=requests, tokens_per_minute=tokens, stats_window_seconds=window_seconds, clock=clock
        )
        self.window_seconds = window_seconds

    def _seconds_left(self, window: _Window, now: float) -> float:
        return max(0.0, window.start + self.window_seconds - now)

    def _charge(self, model: str, cost: int, now: float) -> None:
        return None  # admit() counts the request and its tokens in the window, which is the budget

    def _headers(self, model: str, now: float) -> dict[str, str]:
        window = self._window(model, now)
        reset = format_duration(self._seconds_left(window, now))
        return {
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-limit-tokens": str(self.tokens_per_minute),
            "x-ratelimit-remaining-requests": str(max(0, self.requests_per_minute - window.requests)),
            "x-ratelimit-remaining-tokens": str(max(0, self.tokens_per_minute - window.tokens)),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-reset-tokens": reset,
        }

    def _refusal(self, model: str, cost: int, now: float) -> RateLimited | None:
        window = self._window(model, now)
        wait = self._seconds_left(window, now)
        requests, tokens = self.requests_per_minute, self.tokens_per_minute
        if window.requests + 1 > requests:
            limit_type, message = "requests", _reached(model, "requests", requests, window.requests, 1, wait)
        elif cost > tokens:
            limit_type, message = "tokens", _too_large(model, tokens, cost)
        elif window.tokens + cost > tokens:
            limit_type, message = "tokens", _reached(model, "tokens", tokens, window.tokens, cost, wait)
        else:
            return None
        headers = {**retry_after(wait), **self._headers(model, now)}
        return RateLimited(message, limit_type=limit_type, headers=headers)

    def _burst_seconds(self) -> None:
        return None

    def _per_window(self) -> dict[str, float]:
        return {"requests_per_window": self.requests_per_minute, "tokens_per_window": self.tokens_per_minute}


@dataclass
class _Bucket:
    """One quantity (requests or tokens) of one model.

    ``used`` is what was consumed and has not refilled yet, at ``per_minute / 60`` per second. The
    quantum bucket holds ``capacity - used`` (below zero while a request bigger than it is paid
    off); the per-minute view the headers show holds ``per_minute - used``.
    """

    per_minute: int
    capacity: Fraction
    used: Fraction = _ZERO

    @property
    def rate(self) -> Fraction:
        return Fraction(self.per_minute, 60)

    def refill(self, seconds: Fraction) -> None:
        self.used = max(_ZERO, self.used - self.rate * seconds)

    def wait(self, cost: int) -> Fraction:
        """Seconds until the bucket holds enough for ``cost``: all of it, or a full bucket if it is bigger."""
        needed = min(Fraction(cost), self.capacity)
        return max(_ZERO, self.used - (self.capacity - needed)) / self.rate

    def remaining(self) -> int:
        return max(0, math.floor(self.per_minute - self.used))

    def used_whole(self) -> int:
        return math.ceil(self.used)

    def reset_seconds(self) -> float:
        return float(self.used / self.rate)


@dataclass
class _Buckets:
    at_us: int  # when they were last brought up to date, in microseconds of the emulator's clock
    requests: _Bucket
    tokens: _Bucket


class TokenBucketLimiter(RateLimiter):
    """A bucket of requests and one of tokens per model, refilled continuously (see the module docstring)."""

    algorithm = TOKEN_BUCKET

    def __init__(
        self, *, requests_per_minute: int, tokens_per_minute: int, burst_seconds: float, clock: Callable[[], float]
    ) -> None:
        super().__init__(
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            stats_window_seconds=1,
            clock=clock,
        )
        self.burst_seconds = burst_seconds
        burst = Fraction(repr(float(burst_seconds)))  # 0.1 is a tenth, not its binary neighbour
        self.request_capacity = Fraction(requests_per_minute, 60) * burst
        self.token_capacity = Fraction(tokens_per_minute, 60) * burst
        self._buckets: dict[str, _Buckets] = {}

    def _state(self, model: str, now: float) -> _Buckets:
        """``model``'s buckets refilled up to ``now`` (full when the model is new)."""
        now_us = round(now * MICROSECONDS)
        state = self._buckets.get(model)
        if state is None:
            state = self._buckets[model] = _Buckets(
                at_us=now_us,
                requests=_Bucket(self.requests_per_minute, self.request_capacity),
                tokens=_Bucket(self.tokens_per_minute, self.token_capacity),
            )
        elapsed = Fraction(max(0, now_us - state.at_us), MICROSECONDS)  # a clock stepped back refills nothing
        state.requests.refill(elapsed)
        state.tokens.refill(elapsed)
        state.at_us = now_us
        return state

    def _refusal(self, model: str, cost: int, now: float) -> RateLimited | None:
        state = self._state(model, now)
        if cost > self.tokens_per_minute:
            message = _too_large(model, self.tokens_per_minute, cost)
            return RateLimited(message, limit_type="tokens", headers=self._headers(model, now))
        request_wait, token_wait = state.requests.wait(1), state.tokens.wait(cost)
        if request_wait == 0 and token_wait == 0:
            return None
        # Both buckets must hold enough: the wait is the longer one, and it names the refusal.
        wait = float(max(request_wait, token_wait))
        if request_wait >= token_wait:
            bucket, limit_type, requested = state.requests, "requests", 1
        else:
            bucket, limit_type, requested = state.tokens, "tokens", cost
        message = _reached(model, limit_type, bucket.per_minute, bucket.used_whole(), requested, wait)
        return RateLimited(message, limit_type=limit_type, headers={**retry_after(wait), **self._headers(model, now)})

    def _charge(self, model: str, cost: int, now: float) -> None:
        state = self._state(model, now)
        state.requests.used += 1
        state.tokens.used += cost

    def _headers(self, model: str, now: float) -> dict[str, str]:
        state = self._state(model, now)
        requests, tokens = state.requests, state.tokens
        return {
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-limit-tokens": str(self.tokens_per_minute),
            "x-ratelimit-remaining-requests": str(requests.remaining()),
            "x-ratelimit-remaining-tokens": str(tokens.remaining()),
            "x-ratelimit-reset-requests": format_duration(requests.reset_seconds()),
            "x-ratelimit-reset-tokens": format_duration(tokens.reset_seconds()),
        }

    def _burst_seconds(self) -> float:
        return self.burst_seconds

    def _per_window(self) -> dict[str, float]:
        # A one-second window at the refill rate.
        return {
            "requests_per_window": self.requests_per_minute / 60,
            "tokens_per_window": self.tokens_per_minute / 60,
        }


def rate_limiter(pace: EmulatorSettings, clock: Callable[[], float]) -> RateLimiter:
    """The limiter ``settings.emulator`` asks for, on ``clock``."""
    if pace.rate_limit_algorithm == FIXED_WINDOW:
        return FixedWindowLimiter(
            requests=pace.requests_per_minute,
            tokens=pace.tokens_per_minute,
            window_seconds=pace.rate_window_seconds,
            clock=clock,
        )
    return TokenBucketLimiter(
        requests_per_minute=pace.requests_per_minute,
        tokens_per_minute=pace.tokens_per_minute,
        burst_seconds=pace.burst_seconds,
        clock=clock,
    )
