"""One batch and how time moves it through OpenAI's statuses.

Status is computed lazily from the clock whenever the batch is looked at, never by a background
thread, so a run is deterministic for a given clock: ``validating`` for ``validating_seconds``,
then ``in_progress`` for ``in_progress_seconds`` (request i of n finishes at fraction (i+1)/n of
that span, so a cancel half way keeps half the work, as OpenAI does), then ``finalizing`` for
``finalizing_seconds``, then ``completed`` with the output and error files written. A cancel waits
``finalizing_seconds`` in ``cancelling``; a batch still unfinished 24 h after creation expires.
Requests are executed in a shuffled order seeded by the batch id, which is also the order of the
output file, because OpenAI does not keep input order and batchline must join on custom_id.

Two injected faults (see the faults module) bend this timeline: a ``stuck`` batch never leaves
``validating`` (until cancelled, or until its 24 h window ends, as a real stuck batch does), and a
batch with ``expire_after`` set expires as soon as that many of its requests have completed.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchline.settings import EmulatorSettings

from .errors import InvalidRequest
from .validation import BatchLine, BatchPlan

BATCH_WINDOW_SECONDS = 24 * 60 * 60
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE_STATUSES = frozenset({"validating", "in_progress", "finalizing"})

_NOT_EXECUTED_MESSAGES = {
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
    "batch_expired": "This request could not be executed before the completion window expired.",
}


@dataclass(frozen=True)
class RequestOutcome:
    """One executed request: its output- or error-file line and what it was billed."""

    line: dict[str, Any]
    succeeded: bool
    input_tokens: int
    output_tokens: int


# Runs one request of a batch at a moment of the batch's timeline.
Executor = Callable[["BatchRecord", BatchLine, float], RequestOutcome]
# Stores the lines of a result file and returns the new file's id.
Publisher = Callable[[str, list[dict[str, Any]]], str]


def new_batch_request_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


@dataclass
class BatchRecord:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    plan: BatchPlan
    pace: EmulatorSettings
    status: str = "validating"
    reached: dict[str, float] = field(default_factory=dict)
    outcomes: list[RequestOutcome] = field(default_factory=list)
    not_executed: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    stuck: bool = False
    expire_after: int | None = None  # requests completed before an injected expiry

    def __post_init__(self) -> None:
        self.execution_order: list[BatchLine] = list(self.plan.requests)
        random.Random(self.id).shuffle(self.execution_order)

    @property
    def expires_at(self) -> float:
        return self.created_at + BATCH_WINDOW_SECONDS

    def to_object(self) -> dict[str, Any]:
        succeeded = [o for o in self.outcomes if o.succeeded]
        input_tokens = sum(o.input_tokens for o in succeeded)
        output_tokens = sum(o.output_tokens for o in succeeded)
        errors = (
            {"object": "list", "data": [error.to_dict() for error in self.plan.errors]}
            if self.status == "failed"
            else None
        )

        def at(name: str) -> int | None:
            return int(self.reached[name]) if name in self.reached else None

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.plan.model,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": at("in_progress_at"),
            "expires_at": int(self.expires_at),
            "finalizing_at": at("finalizing_at"),
            "completed_at": at("completed_at"),
            "failed_at": at("failed_at"),
            "expired_at": at("expired_at"),
            "cancelling_at": at("cancelling_at"),
            "cancelled_at": at("cancelled_at"),
            "request_counts": {
                "total": self.total,
                "completed": len(succeeded),
                "failed": len(self.outcomes) - len(succeeded),
            },
            "metadata": self.metadata,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }


def advance(batch: BatchRecord, now: float, execute: Executor, publish: Publisher) -> None:
    """Bring ``batch`` to the state it has reached at ``now``, executing the requests now due."""
    while _step(batch, now, execute, publish):
        pass


def cancel(batch: BatchRecord, now: float, execute: Executor, publish: Publisher) -> None:
    """Start cancelling: work done so far is kept, the rest will never run."""
    advance(batch, now, execute, publish)
    if batch.status == "cancelling":
        return
    if batch.status not in CANCELLABLE_STATUSES:
        raise InvalidRequest(
            f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id", code="invalid_status"
        )
    batch.total = len(batch.execution_order)
    batch.status = "cancelling"
    batch.reached["cancelling_at"] = now
    advance(batch, now, execute, publish)


def _step(batch: BatchRecord, now: float, execute: Executor, publish: Publisher) -> bool:
    """Make at most one status transition; True when one was made, so the caller tries again."""
    pace = batch.pace
    if batch.status == "validating":
        validated_at = math.inf if batch.stuck else batch.created_at + pace.validating_seconds
        if validated_at > batch.expires_at and now >= batch.expires_at:
            _close(batch, "expired", batch.expires_at, "batch_expired", publish)
            return True
        if now < validated_at:
            return False
        if batch.plan.errors:
            batch.status = "failed"
            batch.reached["failed_at"] = validated_at
            return True
        batch.status = "in_progress"
        batch.reached["in_progress_at"] = validated_at
        batch.total = len(batch.execution_order)
        return True

    if batch.status == "in_progress":
        started = batch.reached["in_progress_at"]
        ends = started + pace.in_progress_seconds
        if batch.expire_after is not None:
            # The same arithmetic as a request's due time in _execute_due, so that the last request
            # before the cut is never lost to floating-point rounding.
            cut_at = started + (ends - started) * batch.expire_after / max(1, len(batch.execution_order))
            if now >= cut_at and cut_at <= batch.expires_at:
                _execute_due(batch, cut_at, ends, execute, limit=batch.expire_after)
                _close(batch, "expired", cut_at, "batch_expired", publish)
                return True
        _execute_due(batch, min(now, ends, batch.expires_at), ends, execute, limit=batch.expire_after)
        if now >= ends and ends <= batch.expires_at:
            batch.status = "finalizing"
            batch.reached["finalizing_at"] = ends
            return True
        if now >= batch.expires_at:
            _close(batch, "expired", batch.expires_at, "batch_expired", publish)
            return True
        return False

    if batch.status == "finalizing":
        ends = batch.reached["finalizing_at"] + pace.finalizing_seconds
        if now < ends:
            return False
        _publish_results(batch, publish)
        batch.status = "completed"
        batch.reached["completed_at"] = ends
        return True

    if batch.status == "cancelling":
        ends = batch.reached["cancelling_at"] + pace.finalizing_seconds
        if now < ends:
            return False
        _close(batch, "cancelled", ends, "batch_cancelled", publish)
        return True

    return False


def _execute_due(
    batch: BatchRecord, horizon: float, ends: float, execute: Executor, *, limit: int | None = None
) -> None:
    """Run every request whose slot in the in_progress span has come by ``horizon`` (at most ``limit`` in all)."""
    order = batch.execution_order
    started = batch.reached["in_progress_at"]
    span = ends - started
    stop = len(order) if limit is None else min(limit, len(order))
    while len(batch.outcomes) < stop:
        index = len(batch.outcomes)
        due = ends if index == len(order) - 1 else started + span * (index + 1) / len(order)
        if due > horizon:
            return
        batch.outcomes.append(execute(batch, order[index], due))


def _close(batch: BatchRecord, status: str, at: float, code: str, publish: Publisher) -> None:
    """End a batch early: requests that never ran go to the error file with ``code``."""
    message = _NOT_EXECUTED_MESSAGES[code]
    for request in batch.execution_order[len(batch.outcomes) :]:
        batch.not_executed.append(
            {
                "id": new_batch_request_id(),
                "custom_id": request.custom_id,
                "response": None,
                "error": {"code": code, "message": message},
            }
        )
    _publish_results(batch, publish)
    batch.status = status
    batch.reached[f"{status}_at"] = at


def _publish_results(batch: BatchRecord, publish: Publisher) -> None:
    succeeded = [o.line for o in batch.outcomes if o.succeeded]
    failed = [o.line for o in batch.outcomes if not o.succeeded] + batch.not_executed
    if succeeded:
        batch.output_file_id = publish(f"{batch.id}_output.jsonl", succeeded)
    if failed:
        batch.error_file_id = publish(f"{batch.id}_error.jsonl", failed)
