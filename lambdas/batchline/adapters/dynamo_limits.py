"""The shared rate limiter and circuit breaker: a few DynamoDB items every worker agrees on.

Rate limit: one item per model and window (the provider's accounting window, aligned to the
epoch) counting requests and tokens. A worker may call only after a conditional ADD of its
request's cost succeeds, so the total granted in a window never passes the limit, however many
workers run. When a window is full the worker sleeps to the next one.

Circuit: one item per model with the run of consecutive failures and, once it passes the
threshold, the time the circuit stays open. After the cool-down exactly one worker wins a
conditional write and probes; the others keep waiting.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from batchline.domain.realtime import RetryLater
from batchline.settings import RealtimeSettings
from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY

_CONDITION_FAILED = "ConditionalCheckFailedException"
# Wake a little after the window turns, so that a provider whose clock runs slightly behind ours
# has turned its window too; and grant nothing in the last sliver of a window, where a call could
# reach the provider after its window has turned and be charged to the next one.
_WINDOW_GUARD_FRACTION = 0.01
_WINDOW_CLOSE_FRACTION = 0.01


def _condition_failed(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == _CONDITION_FAILED


class DynamoRateLimiter:
    def __init__(
        self,
        table: Any,
        settings: RealtimeSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._settings = settings
        self._window = settings.rate_window_seconds
        self._clock = clock
        self._sleep = sleep
        self._granted_window: dict[str, int] = {}  # per model: the window of this worker's last grant

    def _key(self, model: str, window: int) -> dict:
        return {TABLE_PARTITION_KEY: f"RATE#{model}", TABLE_SORT_KEY: f"W#{window}"}

    def acquire(self, model: str, tokens: int) -> None:
        limit = self._settings.limit_for(model)
        tokens = min(tokens, limit.tokens_per_minute)  # a request bigger than a window takes a whole one
        deadline = self._clock() + self._settings.max_wait_for_capacity_seconds
        while True:
            now = self._clock()
            window = int(now // self._window)
            closing = (window + 1) * self._window - now < self._window * _WINDOW_CLOSE_FRACTION
            if closing:
                self._sleep((window + 1) * self._window - now)
                continue
            try:
                self._table.update_item(
                    Key=self._key(model, window),
                    UpdateExpression="ADD requests :one, tokens :tokens SET expires_at = :expires",
                    ConditionExpression=(
                        "(attribute_not_exists(paused_until) OR paused_until < :now) AND "
                        "(attribute_not_exists(tokens) OR (tokens <= :max_tokens AND requests <= :max_requests))"
                    ),
                    ExpressionAttributeValues={
                        ":one": 1,
                        ":tokens": tokens,
                        ":max_tokens": limit.tokens_per_minute - tokens,
                        ":max_requests": limit.requests_per_minute - 1,
                        ":now": _dec(now),
                        ":expires": int(now + 3600),
                    },
                )
                self._granted_window[model] = window
                return
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise
            wake = self._wake_time(model, window, now)
            if wake > deadline:
                waited = self._settings.max_wait_for_capacity_seconds
                raise RetryLater(
                    f"no room for {model} in the rate limit within {waited:.0f} s",
                    delay_seconds=max(1.0, wake - self._clock()),
                )
            self._sleep(max(0.0, wake - self._clock()))

    def _wake_time(self, model: str, window: int, now: float) -> float:
        """When to try again: the end of a pause the provider asked for, else the next window."""
        item = self._table.get_item(Key=self._key(model, window), ConsistentRead=True).get("Item") or {}
        paused_until = float(item.get("paused_until", 0))
        if paused_until > now:
            return paused_until
        next_window = (window + 1) * self._window
        return next_window + self._window * _WINDOW_GUARD_FRACTION * random.random()

    def observe(self, model: str, headers: dict[str, str]) -> None:
        """When the provider counts more usage than we do (another client shares the quota), catch up."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            limit = int(lowered["x-ratelimit-limit-tokens"])
            remaining = int(lowered["x-ratelimit-remaining-tokens"])
        except (KeyError, ValueError):
            return
        if remaining > limit * 0.2:
            return  # far from the limit: nothing to correct, and no write spent
        used = limit - remaining
        window = int(self._clock() // self._window)
        if window != self._granted_window.get(model):
            return  # the headers describe the window the call was granted in, which has turned
        try:
            self._table.update_item(
                Key=self._key(model, window),
                UpdateExpression="SET tokens = :used",
                ConditionExpression="attribute_exists(tokens) AND tokens < :used",
                ExpressionAttributeValues={":used": used},
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise

    def pause(self, model: str, seconds: float) -> None:
        now = self._clock()
        window = int(now // self._window)
        self._table.update_item(
            Key=self._key(model, window),
            UpdateExpression="SET paused_until = :until, expires_at = :expires",
            ExpressionAttributeValues={":until": _dec(now + seconds), ":expires": int(now + 3600)},
        )

    def window_usage(self, model: str) -> list[dict]:
        """(for reports and tests) every window this model has used, oldest first."""
        from boto3.dynamodb.conditions import Key

        items = self._table.query(
            KeyConditionExpression=Key(TABLE_PARTITION_KEY).eq(f"RATE#{model}"), ConsistentRead=True
        )["Items"]
        return sorted(
            (
                {"window": int(i[TABLE_SORT_KEY][2:]), "requests": int(i["requests"]), "tokens": int(i["tokens"])}
                for i in items
            ),
            key=lambda w: w["window"],
        )


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


def _dec(value: float):
    from decimal import Decimal

    return Decimal(str(round(value, 3)))
