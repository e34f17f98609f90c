"""The shared rate limiter and circuit breaker: a few DynamoDB items every worker agrees on.

Rate limit: one item per provider key and model holding a token bucket (domain.rate_bucket):
the levels of its request and token buckets, the clock they were computed at, the limits learned
from the provider's headers and a pause a 429 asked for. Every change is a conditional write on the
item's version, so any number of workers grant from one bucket: a worker whose write lost reads the
winner's state (DynamoDB returns it with the refusal) and computes again. A worker asks for several
requests at once, so one write grants a whole batch of calls.

Circuit: one item per model with the run of consecutive failures and, once it passes the
threshold, the time the circuit stays open. After the cool-down exactly one worker wins a
conditional write and probes; the others keep waiting.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from batchline.domain.rate_bucket import (
    BucketShape,
    BucketState,
    Grant,
    Limits,
    needs_relearning,
    paused,
    relearned,
    take,
)
from batchline.domain.realtime import RetryLater
from batchline.settings import RealtimeSettings
from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY

_CONDITION_FAILED = "ConditionalCheckFailedException"
_DESERIALIZE = TypeDeserializer().deserialize
# Writes lost to other workers before this one gives up for now (its messages come back later).
_MAX_CONFLICTS = 25


def _condition_failed(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == _CONDITION_FAILED


def announced_limits(headers: dict[str, str]) -> tuple[Limits | None, int | None]:
    """(limits, remaining tokens) from a response's x-ratelimit-* headers, each None when absent."""
    lowered = {k.lower(): v for k, v in headers.items()}

    def number(name: str) -> int | None:
        try:
            return int(float(lowered[name]))
        except (KeyError, ValueError):
            return None

    rpm, tpm = number("x-ratelimit-limit-requests"), number("x-ratelimit-limit-tokens")
    limits = Limits(rpm, tpm) if rpm and tpm and rpm > 0 and tpm > 0 else None
    return limits, number("x-ratelimit-remaining-tokens")


def _dec(value: float) -> Decimal:
    return Decimal(repr(round(value, 6)))


def key_scope(api_key: str, base_url: str | None) -> str:
    """A short name for a provider key: limits belong to the key (its organisation and project), not to us."""
    return hashlib.sha256(f"{base_url or ''}\n{api_key}".encode()).hexdigest()[:12]


class DynamoTokenBucket:
    def __init__(
        self,
        table: Any,
        settings: RealtimeSettings,
        *,
        scope: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table
        self._settings = settings
        self._shape = BucketShape(safety=settings.safety_fraction, burst_seconds=settings.burst_seconds)
        self._scope = scope
        self._clock = clock
        self._seen: dict[str, tuple[BucketState, int]] = {}  # per model: the last state read or written, its version

    @property
    def shape(self) -> BucketShape:
        return self._shape

    def _key(self, model: str) -> dict:
        return {TABLE_PARTITION_KEY: f"RATE#{self._scope}#{model}", TABLE_SORT_KEY: "BUCKET"}

    def _from_item(self, model: str, item: dict | None) -> tuple[BucketState, int]:
        if not item:
            guess = self._settings.limit_for(model)
            limits = Limits(guess.requests_per_minute, guess.tokens_per_minute)
            return BucketState.full(limits, self._shape, self._clock()), 0
        state = BucketState(
            requests=float(item["requests"]),
            tokens=float(item["tokens"]),
            at=float(item["at"]),
            limits=Limits(int(item["rpm"]), int(item["tpm"])),
            learned=bool(item.get("learned")),
            paused_until=float(item.get("paused_until", 0)),
        )
        return state, int(item["version"])

    def _read(self, model: str) -> tuple[BucketState, int]:
        item = self._table.get_item(Key=self._key(model), ConsistentRead=True).get("Item")
        return self._from_item(model, item)

    def state(self, model: str) -> BucketState:
        """(for reports and tests) the shared state as stored."""
        return self._read(model)[0]

    def _write(self, model: str, state: BucketState, version: int) -> tuple[bool, BucketState, int]:
        """Store `state` if the item is still at `version`: (won, state now stored, its version)."""
        try:
            self._table.update_item(
                Key=self._key(model),
                UpdateExpression=(
                    "SET requests = :r, tokens = :t, #at = :at, rpm = :rpm, tpm = :tpm, learned = :learned, "
                    "paused_until = :paused, version = :next, expires_at = :expires"
                ),
                ConditionExpression="attribute_not_exists(version) OR version = :version",
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues={
                    ":r": _dec(state.requests),
                    ":t": _dec(state.tokens),
                    ":at": _dec(state.at),
                    ":rpm": state.limits.requests_per_minute,
                    ":tpm": state.limits.tokens_per_minute,
                    ":learned": state.learned,
                    ":paused": _dec(state.paused_until),
                    ":next": version + 1,
                    ":version": version,
                    ":expires": int(state.at + 7 * 86400),
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            # The refusal carries the winner's item, in DynamoDB's typed form.
            item = exc.response.get("Item")
            if item:
                current, current_version = self._from_item(model, {k: _DESERIALIZE(v) for k, v in item.items()})
            else:
                current, current_version = self._read(model)
            self._seen[model] = (current, current_version)
            return False, current, current_version
        self._seen[model] = (state, version + 1)
        return True, state, version + 1

    def _change(self, model: str, change: Callable[[BucketState], BucketState | None]) -> BucketState:
        """Apply `change` to the shared state until this worker's write wins (None: nothing to write)."""
        state, version = self._seen.get(model) or self._read(model)
        for _ in range(_MAX_CONFLICTS):
            updated = change(state)
            if updated is None:
                return state
            won, state, version = self._write(model, updated, version)
            if won:
                return state
        raise RetryLater(f"the shared rate limit of {model} is too contended right now", delay_seconds=1.0)

    def acquire(self, model: str, costs: Sequence[int], *, at_most: int) -> Grant:
        """Grant as many of `costs` as the shared bucket holds now, in one write."""
        result: list[Grant] = []

        def grant(state: BucketState) -> BucketState | None:
            answer = take(state, self._shape, costs, self._clock(), at_most=at_most)
            result[:] = [answer]
            return answer.state if answer.granted else None

        self._change(model, grant)
        return result[0]

    def observe(self, model: str, headers: dict[str, str]) -> None:
        """Take the limits a response announced (and its remaining tokens, when lower than ours)."""
        limits, remaining = announced_limits(headers)
        seen = self._seen.get(model)
        if seen is not None:
            state = seen[0]
            if limits is None and state.learned:
                return
            if limits is not None and not needs_relearning(state, limits, remaining, self._shape):
                return  # nothing new: no write spent

        def learn(state: BucketState) -> BucketState | None:
            now = self._clock()
            if limits is None:  # a provider that announces nothing: the guess is all there is
                return None if state.learned else relearned(state, self._shape, now, state.limits, None)
            if not needs_relearning(state, limits, remaining, self._shape):
                return None
            return relearned(state, self._shape, now, limits, remaining)

        self._change(model, learn)

    def pause(self, model: str, seconds: float, headers: dict[str, str] | None = None) -> None:
        """The provider said 429: no worker calls this model for `seconds`."""
        limits, _ = announced_limits(headers or {})

        def hold(state: BucketState) -> BucketState:
            now = self._clock()
            if limits is not None:
                state = relearned(state, self._shape, now, limits, None)
            return paused(state, self._shape, now, seconds)

        self._change(model, hold)


class DynamoCircuitBreaker:
    def __init__(self, table: Any, settings: RealtimeSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._threshold = settings.circuit_failure_threshold
        self._cooldown = settings.circuit_cooldown_seconds
        self._clock = clock
        self._me = uuid.uuid4().hex
        self._seen_failures: dict[str, int] = {}

    def _key(self, model: str) -> dict:
        return {TABLE_PARTITION_KEY: f"CIRCUIT#{model}", TABLE_SORT_KEY: "STATE"}

    def before_call(self, model: str) -> None:
        item = self._table.get_item(Key=self._key(model), ConsistentRead=True).get("Item") or {}
        self._seen_failures[model] = int(item.get("failures", 0))
        open_until = float(item.get("open_until", 0))
        if not open_until:
            return
        now = self._clock()
        if now < open_until:
            raise RetryLater(
                f"circuit for {model} open for another {open_until - now:.1f} s", delay_seconds=open_until - now
            )
        try:  # cool-down over: one worker probes, the others wait for its verdict
            self._table.update_item(
                Key=self._key(model),
                UpdateExpression="SET probe_until = :until, probe_owner = :me",
                ConditionExpression="attribute_not_exists(probe_until) OR probe_until < :now",
                ExpressionAttributeValues={":until": _dec(now + self._cooldown), ":me": self._me, ":now": _dec(now)},
            )
        except ClientError as exc:
            if _condition_failed(exc):
                raise RetryLater(
                    f"circuit for {model} half-open: another worker is probing", delay_seconds=self._cooldown / 4
                ) from None
            raise

    def succeeded(self, model: str) -> None:
        if not self._seen_failures.get(model):
            return  # nothing to reset: no write on the happy path
        self._table.update_item(
            Key=self._key(model),
            UpdateExpression="SET failures = :zero, open_until = :zero REMOVE probe_until, probe_owner",
            ExpressionAttributeValues={":zero": 0},
        )
        self._seen_failures[model] = 0

    def failed(self, model: str) -> None:
        now = self._clock()
        failures = int(
            self._table.update_item(
                Key=self._key(model),
                UpdateExpression="ADD failures :one",
                ExpressionAttributeValues={":one": 1},
                ReturnValues="UPDATED_NEW",
            )["Attributes"]["failures"]
        )
        self._seen_failures[model] = failures
        if failures >= self._threshold:
            self._table.update_item(
                Key=self._key(model),
                UpdateExpression="SET open_until = :until REMOVE probe_until, probe_owner",
                ExpressionAttributeValues={":until": _dec(now + self._cooldown)},
            )
