"""Per-model rate limits on the realtime endpoints, enforced the way OpenAI enforces them.

Time is cut into fixed windows of ``window_seconds`` aligned to the epoch (window index =
floor(now / window)). In each window a model may take ``requests`` requests and ``tokens`` tokens,
a request costing its prompt tokens plus the output it may produce. A request that does not fit in
what is left of the current window is refused with a 429 and consumes nothing. Every answer
carries OpenAI's ``x-ratelimit-*`` headers (durations such as ``1s``, ``6m0s``, ``120ms``), and a
refusal also says when to come back (``retry-after``, ``retry-after-ms``).

The limiter also keeps the statistics a benchmark reads: per model, the requests accepted and
refused, the tokens charged, and the usage of each window.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import RateLimited

ORGANIZATION = "org-emulator"


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
    windows: dict[int, _Window] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests_ok": self.requests_ok,
            "requests_429": self.requests_429,
            "requests_5xx": self.requests_5xx,
            "tokens_charged": self.tokens_charged,
            "windows": [
                {"window_start": w.start, "requests": w.requests, "tokens": w.tokens, "refused": w.refused}
                for _, w in sorted(self.windows.items())
            ],
        }


class RateLimiter:
    """Request and token budgets per model and window; thread-safe, on the emulator's clock."""

    def __init__(self, *, requests: int, tokens: int, window_seconds: float, clock: Callable[[], float]) -> None:
        self.requests = requests
        self.tokens = tokens
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, _ModelUsage] = {}

    def admit(self, model: str, cost: int) -> dict[str, str]:
        """Charge one request of ``cost`` tokens to ``model``'s current window and return the headers.

        Raise RateLimited, charging nothing, when the request does not fit in what the window has left.
        """
        with self._lock:
            now = self._clock()
            window = self._window(model, now)
            usage = self._usage[model]
            refusal = self._refusal(model, window, cost, now)
            if refusal is not None:
                window.refused += 1
                usage.requests_429 += 1
                raise refusal
            window.requests += 1
            window.tokens += cost
            usage.requests_ok += 1
            usage.tokens_charged += cost
            return self._headers(window, now)

    def headers(self, model: str) -> dict[str, str]:
        """The headers for ``model`` as things stand, charging nothing (for answers that are not charged)."""
        with self._lock:
            now = self._clock()
            return self._headers(self._window(model, now), now)

    def count_refusal(self, model: str, status: int) -> None:
        """Count an answer that was not the limiter's doing (an injected 429 or 5xx) in the statistics."""
        with self._lock:
            usage = self._usage.setdefault(model, _ModelUsage())
            if status == 429:
                usage.requests_429 += 1
                self._window(model, self._clock()).refused += 1
            else:
                usage.requests_5xx += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "window_seconds": self.window_seconds,
                "requests_per_window": self.requests,
                "tokens_per_window": self.tokens,
                "models": {model: usage.to_dict() for model, usage in sorted(self._usage.items())},
            }

    # ----- inside the lock ----------------------------------------------------------------------

    def _window(self, model: str, now: float) -> _Window:
        index = math.floor(now / self.window_seconds)
        windows = self._usage.setdefault(model, _ModelUsage()).windows
        window = windows.get(index)
        if window is None:
            window = windows[index] = _Window(start=index * self.window_seconds)
        return window

    def _seconds_left(self, window: _Window, now: float) -> float:
        return max(0.0, window.start + self.window_seconds - now)

    def _headers(self, window: _Window, now: float) -> dict[str, str]:
        reset = format_duration(self._seconds_left(window, now))
        return {
            "x-ratelimit-limit-requests": str(self.requests),
            "x-ratelimit-limit-tokens": str(self.tokens),
            "x-ratelimit-remaining-requests": str(max(0, self.requests - window.requests)),
            "x-ratelimit-remaining-tokens": str(max(0, self.tokens - window.tokens)),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-reset-tokens": reset,
        }

    def _refusal(self, model: str, window: _Window, cost: int, now: float) -> RateLimited | None:
        wait = self._seconds_left(window, now)
        where = f"{model} in organization {ORGANIZATION}"
        if window.requests + 1 > self.requests:
            limit_type = "requests"
            message = (
                f"Rate limit reached for {where} on requests per min (RPM): Limit {self.requests}, "
                f"Used {window.requests}, Requested 1. Please try again in {format_duration(wait)}."
            )
        elif cost > self.tokens:
            # It would not fit even in an empty window: OpenAI says so rather than "try again".
            limit_type = "tokens"
            message = (
                f"Request too large for {where} on tokens per min (TPM): Limit {self.tokens}, "
                f"Requested {cost}. The input or output tokens must be reduced in order to run successfully."
            )
        elif window.tokens + cost > self.tokens:
            limit_type = "tokens"
            message = (
                f"Rate limit reached for {where} on tokens per min (TPM): Limit {self.tokens}, "
                f"Used {window.tokens}, Requested {cost}. Please try again in {format_duration(wait)}."
            )
        else:
            return None
        return RateLimited(message, limit_type=limit_type, headers={**retry_after(wait), **self._headers(window, now)})


def retry_after(seconds: float) -> dict[str, str]:
    """``retry-after-ms`` (milliseconds, rounded up) and ``retry-after`` (whole seconds, rounded up), consistent."""
    ms = max(1, math.ceil(round(seconds * 1000, 6)))
    return {"retry-after-ms": str(ms), "retry-after": str(math.ceil(ms / 1000))}
