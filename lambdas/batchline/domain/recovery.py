"""Recovery on the batch route: which failures earn another round, and when a batch is stuck.

A shard runs in rounds. Round 0 is the planned file; when a batch ends, its requests that failed
in a way worth another try (the batch expired or was cancelled before running them, the provider
answered 429 or 5xx) form the next round, up to `max_attempts` rounds; every other failure is
final and goes to errors.jsonl with the provider's message.
"""

from __future__ import annotations

from typing import Any

# A shard in one of these statuses needs nothing more from the poll loop (a resumed job reopens some).
ENDED_SHARD_STATUSES = frozenset({"collected", "failed", "cancelled", "budget_stopped", "realtime"})

RETRIABLE_CODES = frozenset(
    {"batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error", "internal_error", "timeout"}
)
RETRIABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
TOKEN_LIMIT_CODE = "token_limit_exceeded"

# Why requests are missing from a batch's files, by the batch's final status.
UNANSWERED_REASONS = {
    "failed": ("batch_failed", "the provider failed the whole batch"),
    "expired": ("batch_expired", "the batch expired before this request was executed"),
    "cancelled": ("batch_cancelled", "the batch was cancelled before this request was executed"),
    "completed": ("missing_from_output", "the batch completed without a result or an error for this request"),
}

# How long a batch may sit in a status that normally passes quickly, counted from when it entered it.
_SINCE = {"validating": "created_at", "finalizing": "finalizing_at"}


def is_retriable(error: dict) -> bool:
    return error.get("code") in RETRIABLE_CODES or error.get("status_code") in RETRIABLE_STATUS


def unanswered_reason(batch: dict[str, Any]) -> tuple[str, str]:
    code, message = UNANSWERED_REASONS.get(batch["status"], ("missing_from_output", "no outcome from the provider"))
    failures = (batch.get("errors") or {}).get("data") or []
    if batch["status"] == "failed" and failures:
        first = failures[0]
        code = first.get("code") or code
        message = f"the provider failed the batch: {first.get('message') or code}"
        if first.get("line") is not None:
            message += f" (line {first['line']} of the shard file)"
    return code, message


def failed_for_token_limit(batch: dict[str, Any]) -> bool:
    """The batch was refused because the organisation's enqueued-token queue was full: submit it again later."""
    failures = (batch.get("errors") or {}).get("data") or []
    return batch.get("status") == "failed" and any(failure.get("code") == TOKEN_LIMIT_CODE for failure in failures)


def seconds_in_status(batch: dict[str, Any], now: float) -> float:
    """How long the batch has been in its current status, as far as its timestamps say."""
    since = batch.get(_SINCE.get(batch.get("status", ""), "in_progress_at") or "") or batch.get("created_at") or now
    return max(0.0, now - float(since))


def next_poll_seconds(batch: dict[str, Any], now: float, *, floor: int, ceiling: int) -> int:
    """How long to wait before looking at a batch again.

    Every look costs Step Functions transitions, and a batch may run for a day: instead of a
    fixed interval, wait about half the time the batch's own progress says is left (at least
    `floor`, at most `ceiling`), or, before any progress shows, as long as it has run so far.
    """
    if batch.get("status") != "in_progress":
        return floor
    counts = batch.get("request_counts") or {}
    total = int(counts.get("total") or 0)
    done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
    running = max(0.0, now - float(batch.get("in_progress_at") or now))
    if total and done:
        remaining = (total - done) * running / done
        wait = remaining / 2
    else:
        wait = running
    return int(min(ceiling, max(floor, wait)))


def is_stuck(batch: dict[str, Any], now: float, stuck_after_seconds: float) -> bool:
    return batch.get("status") in _SINCE and seconds_in_status(batch, now) > stuck_after_seconds
