"""Budgets: how much a job may still spend, and what to do as it nears its cap.

Money is counted in integer nano-dollars (1e-9 USD): atomic counters of floats would drift.
Every scope (a job, a calendar month) has a `committed` counter: what was spent plus what is
reserved for work in flight or planned. Work reserves its estimate before anything is sent and
settles with the real cost afterwards, so under any number of concurrent workers the spend can
pass a cap only by what actual usage exceeds the estimates of work already in flight.

A job's plan reserves its whole estimate at once (the job's "hold"); each piece of work (a batch,
a realtime request) then moves its own estimate out of the hold, or, when the hold is used up
(retries, a fallback model), reserves afresh against the caps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

NANO_PER_USD = 1_000_000_000

STAGE_BUDGET = "budget"


def to_nano(usd: float) -> int:
    """Reservations round up, so that rounding never lets spend slip past a cap."""
    return math.ceil(usd * NANO_PER_USD - 1e-6)


def to_usd(nano: int) -> float:
    return nano / NANO_PER_USD


def month_of(moment: datetime | None = None) -> str:
    """The calendar month (UTC) a job's spend counts against."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m")


class Stance(Enum):
    NORMAL = "normal"
    FALLBACK = "fallback"  # past the first threshold: send the rest to the cheaper model
    STOP = "stop"  # past the second: send nothing more; in-flight work finishes


@dataclass(frozen=True)
class ScopeUsage:
    """One scope's counters: `committed` includes `hold` (reserved for planned, not yet started work)."""

    name: str
    cap_nano: int | None
    committed_nano: int = 0
    hold_nano: int = 0

    @property
    def used_share(self) -> float:
        """Spent plus in flight, as a share of the cap; the hold is not used yet."""
        if not self.cap_nano:
            return 0.0
        return (self.committed_nano - self.hold_nano) / self.cap_nano

    @property
    def room_nano(self) -> int | None:
        return None if self.cap_nano is None else self.cap_nano - self.committed_nano


@dataclass(frozen=True)
class BudgetPolicy:
    fallback_threshold: float
    stop_threshold: float
    fallback_models: dict[str, str]

    def stance(self, *scopes: ScopeUsage) -> Stance:
        share = max((scope.used_share for scope in scopes), default=0.0)
        if share >= self.stop_threshold:
            return Stance.STOP
        if share >= self.fallback_threshold:
            return Stance.FALLBACK
        return Stance.NORMAL

    def sendable(self, scopes: tuple[ScopeUsage, ...], reservations: list[int]) -> int:
        """How many of `reservations`, in order, may start before the spend passes the stop threshold.

        A request may start while what is spent and in flight stays below the threshold, counting the
        requests started before it: a whole batch is judged as if its requests came one by one.
        """
        count = 0
        in_flight = 0
        for reservation in reservations:
            shares = [
                (scope.committed_nano - scope.hold_nano + in_flight) / scope.cap_nano
                for scope in scopes
                if scope.cap_nano
            ]
            if shares and max(shares) >= self.stop_threshold:
                break
            in_flight += reservation
            count += 1
        return count

    def model_for(self, model: str, stance: Stance) -> str:
        if stance is Stance.FALLBACK:
            return self.fallback_models.get(model, model)
        return model


def refusal_message(scope: str, estimate_nano: int, cap_nano: int, room_nano: int) -> str:
    return (
        f"the job's estimate ${to_usd(estimate_nano):,.4f} does not fit in the {scope} budget: "
        f"${to_usd(max(room_nano, 0)):,.4f} left of ${to_usd(cap_nano):,.4f}. Nothing was sent; raise the "
        f"budget (metadata batchline-budget-usd, or settings budget.*) and upload the file again to resume."
    )


def stop_message(scopes: tuple[ScopeUsage, ...], threshold: float) -> str:
    worst = max(scopes, key=lambda scope: scope.used_share)
    return (
        f"not sent: the {worst.name} budget reached {worst.used_share:.0%} of ${to_usd(worst.cap_nano or 0):,.4f} "
        f"(stop threshold {threshold:.0%}); the job is paused and resumes when the same file is uploaded again "
        f"with more budget"
    )


BUDGET_METADATA_KEY = "batchline-budget-usd"


def requested_job_cap(metadata: dict[str, str], default_usd: float | None) -> int | None:
    """The job's cap in nano-dollars: the upload's own (object metadata) or the settings' default."""
    raw = metadata.get(BUDGET_METADATA_KEY)
    if raw is None:
        return None if default_usd is None else to_nano(default_usd)
    try:
        usd = float(raw)
    except ValueError:
        usd = float("nan")
    if not math.isfinite(usd) or usd <= 0:
        raise ValueError(f"object metadata {BUDGET_METADATA_KEY}={raw!r}: expected a positive number of US dollars")
    return to_nano(usd)


def realtime_ceiling_nano(input_per_million: float, output_per_million: float, token_cost: int) -> int:
    """A realtime request's most possible cost: every token it may use, at the dearer of the two prices."""
    return to_nano(token_cost * max(input_per_million, output_per_million) / 1e6)
