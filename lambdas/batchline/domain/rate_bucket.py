"""The provider's rate limit as a token bucket: the rule every worker applies to one shared state.

OpenAI announces per-minute limits but enforces them in short quanta, and refills the allowance
continuously (limit/60 per second): a client that spends a minute's budget in one burst is refused
although it stays under the per-minute figure. So the allowance is modelled as two buckets per
model, one of requests and one of tokens, each filling at ``safety * limit / 60`` per second and
holding at most ``burst_seconds`` of that. A request is granted when both hold its cost; a request
bigger than a bucket's capacity is granted when that bucket is full, and leaves it in debt.

Clock skew between workers: the state records the latest clock any worker wrote (``at``). A worker
whose clock is behind sees no refill until its clock passes that time, so it waits longer than it
must; a worker whose clock is ahead moves ``at`` forward once, which can grant at most its skew's
worth of refill early. Neither lets the total granted drift above the rate.

Pure arithmetic on plain numbers: the DynamoDB adapter stores `BucketState`, tests drive it with
any clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

# Refill arithmetic in floats: a level that should read exactly a request's cost may read a hair less.
_EPSILON = 1e-6


@dataclass(frozen=True)
class Limits:
    """What the provider allows per minute for one model (learned from its headers, or a first guess)."""

    requests_per_minute: int
    tokens_per_minute: int


@dataclass(frozen=True)
class BucketShape:
    """How much of the provider's allowance the workers use: a share of the rate, a burst of seconds."""

    safety: float  # share of the provider's rate used, below 1 to leave room for timing
    burst_seconds: float  # the bucket holds this many seconds of refill

    def request_rate(self, limits: Limits) -> float:
        return self.safety * limits.requests_per_minute / 60

    def token_rate(self, limits: Limits) -> float:
        return self.safety * limits.tokens_per_minute / 60

    def request_capacity(self, limits: Limits) -> float:
        # Never below one request: a limit of a few requests a minute must still grant one at a time.
        return max(1.0, self.request_rate(limits) * self.burst_seconds)

    def token_capacity(self, limits: Limits) -> float:
        return max(1.0, self.token_rate(limits) * self.burst_seconds)


@dataclass(frozen=True)
class BucketState:
    requests: float  # levels at time `at`
    tokens: float
    at: float  # epoch seconds: the latest clock a worker wrote
    limits: Limits
    learned: bool = False  # the limits came from the provider's headers, not from the settings' guess
    paused_until: float = 0.0  # a 429's retry-after: nothing is granted before then

    @classmethod
    def full(cls, limits: Limits, shape: BucketShape, now: float, *, learned: bool = False) -> BucketState:
        return cls(shape.request_capacity(limits), shape.token_capacity(limits), now, limits, learned)


@dataclass(frozen=True)
class Grant:
    granted: int  # how many of the costs, in order, may be sent now
    state: BucketState  # the state after those grants
    wait_seconds: float  # when the next cost would fit (0 when all were granted)


def refilled(state: BucketState, shape: BucketShape, now: float) -> BucketState:
    """The state as of `now` (or as of the latest clock written, if that is later).

    Before the limits are learned nothing refills: the guessed rate may be far above the real one,
    and what was sent meanwhile must still count once the real limits are known.
    """
    at = max(now, state.at)
    elapsed = at - state.at if state.learned else 0.0
    limits = state.limits
    return replace(
        state,
        requests=min(shape.request_capacity(limits), state.requests + elapsed * shape.request_rate(limits)),
        tokens=min(shape.token_capacity(limits), state.tokens + elapsed * shape.token_rate(limits)),
        at=at,
    )


def _seconds_until(level: float, need: float, rate: float) -> float:
    return max(0.0, (need - level) / rate) if rate > 0 else math.inf


def take(state: BucketState, shape: BucketShape, costs: Sequence[int], now: float, *, at_most: int) -> Grant:
    """Grant as many of `costs` (tokens per request, in order) as fit now, up to `at_most`.

    Before the limits are learned from the provider, one request at a time: its answer's headers
    tell the real limits before a burst sized on a guess can be refused.
    """
    current = refilled(state, shape, now)
    limits = current.limits
    if current.paused_until > current.at:
        return Grant(0, current, current.paused_until - now)
    if not current.learned:
        at_most = min(at_most, 1)
    token_capacity = shape.token_capacity(limits)
    requests, tokens = current.requests, current.tokens
    granted = 0
    wait = 0.0
    for cost in costs[:at_most]:
        need_tokens = min(cost, token_capacity)
        if requests >= 1 - _EPSILON and tokens >= need_tokens - _EPSILON:
            requests -= 1
            tokens -= cost
            granted += 1
            continue
        wait = max(
            _seconds_until(requests, 1, shape.request_rate(limits)),
            _seconds_until(tokens, need_tokens, shape.token_rate(limits)),
        )
        # Measured on this worker's clock: add how far the state's clock is ahead of it.
        wait += current.at - now
        break
    return Grant(granted, replace(current, requests=requests, tokens=tokens), wait)


def paused(state: BucketState, shape: BucketShape, now: float, seconds: float) -> BucketState:
    """The provider said 429: empty the buckets and grant nothing for `seconds` (at least)."""
    current = refilled(state, shape, now)
    return replace(
        current,
        requests=min(current.requests, 0.0),
        tokens=min(current.tokens, 0.0),
        paused_until=max(current.paused_until, now + seconds),
    )


def relearned(
    state: BucketState, shape: BucketShape, now: float, limits: Limits, remaining_tokens: int | None
) -> BucketState:
    """Take the provider's announced limits, and its remaining tokens when that is below our level.

    A lower remaining figure means someone else spends from the same quota (another job, another
    client of the key): our level comes down to it, so the next grants do not overrun the provider.
    """
    current = refilled(state, shape, now)
    # What was spent stays spent: the new levels are the new capacities less the amounts not yet
    # refilled (the provider charged those too), and never fuller, in proportion, than before.
    new_requests, new_tokens = shape.request_capacity(limits), shape.token_capacity(limits)
    old_requests, old_tokens = shape.request_capacity(current.limits), shape.token_capacity(current.limits)
    updated = replace(
        current,
        limits=limits,
        learned=True,
        requests=min(current.requests * new_requests / old_requests, new_requests - (old_requests - current.requests)),
        tokens=min(current.tokens * new_tokens / old_tokens, new_tokens - (old_tokens - current.tokens)),
    )
    if remaining_tokens is not None and remaining_tokens < updated.tokens:
        updated = replace(updated, tokens=float(remaining_tokens))
    return updated


def needs_relearning(state: BucketState, limits: Limits, remaining_tokens: int | None, shape: BucketShape) -> bool:
    """Whether the provider's headers say something the shared state does not know yet (a write is due)."""
    if not state.learned or state.limits != limits:
        return True
    return remaining_tokens is not None and remaining_tokens < min(state.tokens, shape.token_capacity(limits)) - 1
