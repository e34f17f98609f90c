"""Recovery on the batch route: which failures earn another round, and when a batch is stuck.

A shard runs in rounds. Round 0 is the planned file; when a batch ends, its requests that failed
in a way worth another try (the batch expired or was cancelled before running them, the provider
answered 429 or 5xx, an answer did not follow the JSON Schema its request asked for) form the next
round, up to `max_attempts` rounds; every other failure is final and goes to errors.jsonl with the
provider's message.

A batch the provider refused when validating its file ran nothing, so its requests used no
attempt. When the refusal names lines, their requests are errors and the rest form the next
round. When it names none, the round is bisected: its first half is the next round and its second
half is held, to be sent once no round is left, until the request the provider refuses is alone;
at most `bisect_limit` such refusals per shard, then the refused round's requests are errors.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from batchline.domain.answers import CODE_SCHEMA_INVALID

# A shard in one of these statuses needs nothing more from the poll loop (a resumed job reopens some).

RETRIABLE_CODES = frozenset(
    {
        "batch_expired",
        "batch_cancelled",
        "rate_limit_exceeded",
        "server_error",
        "internal_error",
        "timeout",
        CODE_SCHEMA_INVALID,  # billed, but asked again: another answer may follow the schema
    }
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


def is_retriable(error: dict[str, Any]) -> bool:
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


def validation_refusal(batch: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The errors of a batch the provider refused for its file's content, or None when it was not.

    A refusal for the enqueued-token limit is not one: the same file is submitted again later.
    """
    failures = (batch.get("errors") or {}).get("data") or []
    if batch.get("status") != "failed" or not failures or failed_for_token_limit(batch):
        return None
    return failures


def bisect_limit(requests: int) -> int:
    """Refusals naming no line that a shard of `requests` may take before a refused round is given up.

    Isolating one unreadable request takes about two batches per halving (one refused, one run);
    twice log2 of the shard and a few to spare bound that, so a refusal that would hit every part
    of the file cannot cost a batch per request.
    """
    return 2 * math.ceil(math.log2(max(2, requests))) + 2


@dataclass(frozen=True, slots=True)
class RefusedRequest:
    custom_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RefusalSplit:
    """What becomes of the requests of a refused round: errors, the next round, held for later."""

    refused: list[RefusedRequest] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    hold: list[str] = field(default_factory=list)

    @property
    def bisected(self) -> bool:
        return bool(self.hold)


def split_refused_round(
    custom_ids: list[str], spans: list[int], failures: list[dict[str, Any]], *, unnamed_refusals: int, limit: int
) -> RefusalSplit:
    """Sort the requests of a round the provider refused (`custom_ids` in the file's order).

    `spans` (shard_lines.provider_line_spans) map the provider's 1-based line numbers back to the
    requests; `unnamed_refusals` is how many refusals naming no line the shard took before this one.
    """
    named: dict[int, dict[str, Any]] = {}
    for failure in failures:
        line = failure.get("line")
        if isinstance(line, int) and not isinstance(line, bool) and 1 <= line <= (spans[-1] if spans else 0):
            named.setdefault(bisect_left(spans, line), failure)
    if named:
        refused = [
            RefusedRequest(custom_ids[index], *_refusal(failure, f" (line {failure['line']} of the batch file)"))
            for index, failure in sorted(named.items())
        ]
        return RefusalSplit(refused=refused, retry=[c for i, c in enumerate(custom_ids) if i not in named])
    first = failures[0]
    if len(custom_ids) == 1:
        note = " (the refusal named no line; this request was found by splitting the file)"
        return RefusalSplit(refused=[RefusedRequest(custom_ids[0], *_refusal(first, note))])
    if unnamed_refusals + 1 > limit:
        note = f" (the refusal named no line; splitting the file gave up after {unnamed_refusals} refusals)"
        code, message = _refusal(first, note)
        return RefusalSplit(refused=[RefusedRequest(custom_id, code, message) for custom_id in custom_ids])
    half = (len(custom_ids) + 1) // 2
    return RefusalSplit(retry=custom_ids[:half], hold=custom_ids[half:])


def _refusal(failure: dict[str, Any], note: str) -> tuple[str, str]:
    code = str(failure.get("code") or "batch_refused")
    text = str(failure.get("message") or code)
    return code, f"the provider refused this request when validating its batch: {text}{note}"
