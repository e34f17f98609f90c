"""What the batch poll loop's use cases are handed: their ports, and the settings they act on.

The wiring (batchline/wiring.py, in AWS and in the local run) builds one `LoopContext` per
invocation; the unit tests build one from in-memory fakes. No use case of the loop reads the
environment, builds a client or imports an adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from batchline.domain.budget import BudgetPolicy
from batchline.domain.pricing import PriceBook
from batchline.domain.request_line import RequestValidator
from batchline.workflow.ports import (
    AdmissionLedger,
    BatchObjects,
    BatchProvider,
    BudgetReservations,
    Clock,
    LineSpool,
    Metrics,
    RequestQueue,
    ShardRecords,
)


@dataclass(frozen=True)
class LoopSettings:
    """The settings the loop acts on, taken from the one settings model by the wiring."""

    output_prefix: str
    completion_window: str
    poll_seconds: int
    max_poll_seconds: int
    max_polls_per_execution: int
    batches_in_flight: int  # batches of one job running at once
    step_attempts: int  # a shard's step failing transiently this many times in a row fails the shard
    max_attempts: int  # rounds a request may be sent in
    realtime_below_requests: int  # a next round this small goes realtime instead
    stuck_after_seconds: float
    realtime_stall_seconds: float
    queue_limit: Callable[[str], int]  # the model's enqueued-token limit


@dataclass(frozen=True)
class LoopContext:
    jobs: ShardRecords
    storage: BatchObjects
    provider: Callable[[], BatchProvider]  # the key is looked up on first use: not every step calls it
    admission: AdmissionLedger
    budgets: BudgetReservations
    budget_policy: BudgetPolicy
    prices: PriceBook
    validator: Callable[[], RequestValidator]  # built when a round is first enqueued
    queue: Callable[[], RequestQueue]  # only the realtime route and a round sent realtime need it
    spool: Callable[[], LineSpool]
    metrics: Metrics
    clock: Clock
    settings: LoopSettings

    @cached_property
    def batches(self) -> BatchProvider:
        return self.provider()

    def now_iso(self) -> str:
        return self.clock.now().isoformat(timespec="milliseconds")
