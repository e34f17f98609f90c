"""How far along a job is, read from its items in the job table: plain values, no AWS.

The job item holds the plan (valid requests, route), the realtime counters, the budget counters
and, once Finalize ran, the summary's figures. Each shard item holds its status, its round, its
batch and the batch's last seen ``request_counts``, and the tally of the rounds it collected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from batchline.domain.budget import to_usd
from batchline.domain.statuses import ENDED_SHARD_STATUSES

FINAL_STATUSES = frozenset({"succeeded", "completed_with_errors", "paused", "cancelled", "failed"})
TERMINAL_BATCH_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


def job_finished(job: dict) -> bool:
    """Finalize has written the outputs of the job's last run (a resumed job runs again)."""
    return job.get("status") in FINAL_STATUSES


def shown_status(job: dict) -> str:
    """The job's status as a person thinks of it: a cancelled job says so, before and after it ends."""
    if job.get("cancel_requested"):
        if job_finished(job):
            return "cancelled"
        return "stopped" if job.get("execution_stopped") else "cancelling"  # `cancel --now`: no outputs
    return str(job.get("status") or "unknown")


@dataclass(frozen=True)
class ShardProgress:
    shard_id: str
    model: str
    url: str
    status: str
    round: int
    requests: int
    done: int  # requests with an outcome (or with none to come: an ended shard counts whole)
    batch_id: str | None
    batch_status: str | None
    batch_completed: int | None
    batch_failed: int | None
    batch_total: int | None
    sent_realtime: int = 0  # the last few requests of a round, sent to the realtime workers

    @property
    def on_batch(self) -> int:
        """The shard's requests that go through batches (all but those sent realtime)."""
        return self.requests - self.sent_realtime

    @property
    def ended(self) -> bool:
        return self.status in ENDED_SHARD_STATUSES

    @property
    def batch_in_flight(self) -> bool:
        return bool(self.batch_id) and self.batch_status not in TERMINAL_BATCH_STATUSES


def shard_progress(shard: dict) -> ShardProgress:
    requests = int(shard.get("requests", 0))
    round_size = int(shard.get("round_requests", requests))
    counts = shard.get("request_counts") or {}
    batch_id = shard.get("batch_id")
    # request_counts stay on the shard after its round was collected: only the current batch's count.
    current = bool(batch_id) and int(counts.get("total", -1)) == round_size
    completed = int(counts.get("completed", 0)) if current else None
    failed = int(counts.get("failed", 0)) if current else None
    status = str(shard.get("status", "planned"))
    sent_realtime = round_size if status == "realtime" else 0
    if status in ENDED_SHARD_STATUSES:
        # Nothing more to come from a batch: a round sent realtime shows on the realtime route's bar.
        done = requests - sent_realtime
    else:
        done = int(shard.get("succeeded", 0)) + int(shard.get("failed", 0)) + (completed or 0) + (failed or 0)
    return ShardProgress(
        shard_id=str(shard.get("shard_id", "?")),
        model=str(shard.get("round_model") or shard.get("model", "?")),
        url=str(shard.get("url", "?")),
        status=status,
        round=int(shard.get("round", 0)),
        requests=requests,
        done=min(done, requests),
        batch_id=batch_id,
        batch_status=shard.get("batch_status") if batch_id else None,
        batch_completed=completed,
        batch_failed=failed,
        batch_total=int(counts["total"]) if current else None,
        sent_realtime=sent_realtime,
    )


@dataclass(frozen=True)
class Spend:
    """The job's budget counters in US dollars: spent (settled), in flight (reserved), held (planned)."""

    cap_usd: float | None
    spent_usd: float
    in_flight_usd: float
    held_usd: float

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.in_flight_usd + self.held_usd


def spend_of(job: dict) -> Spend:
    cap = job.get("budget_cap_nano")
    spent = int(job.get("spent_nano", 0))
    held = max(0, int(job.get("hold_nano", 0)))
    in_flight = max(0, int(job.get("committed_nano", 0)) - held - spent)
    return Spend(
        cap_usd=None if cap is None else to_usd(int(cap)),
        spent_usd=to_usd(spent),
        in_flight_usd=to_usd(in_flight),
        held_usd=to_usd(held),
    )


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    status: str  # as shown: the table's status, or cancelling / cancelled
    table_status: str  # as the table holds it (the summary's status once finished)
    finished: bool
    route: str | None
    input_lines: int
    valid: int
    invalid: int
    batch_done: int
    batch_total: int
    realtime_done: int
    realtime_total: int
    cost_usd: float
    spend: Spend
    started_at: str | None
    finished_at: str | None
    message: str | None
    cancel_requested: str | None
    shards: list[ShardProgress] = field(default_factory=list)

    @property
    def done(self) -> int:
        """Requests with an outcome, over both routes (the whole job once it finished)."""
        if self.finished:
            return self.valid
        return min(self.valid, self.batch_done + self.realtime_done)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done}


def job_progress(job: dict, shards: list[dict]) -> JobProgress:
    """The progress of one job from its job item and its shard items (none for a listing)."""
    finished = job_finished(job)
    route = job.get("route")
    views = [shard_progress(shard) for shard in sorted(shards, key=lambda s: str(s.get("shard_id", "")))]
    on_batch = [] if route == "realtime" else views
    realtime_total = int(job.get("valid", 0)) if route == "realtime" else int(job.get("realtime_expected", 0))
    if finished:
        cost = float(job.get("cost_usd", 0.0))
    else:
        cost = to_usd(sum(int(s.get("cost_nano_usd", 0)) for s in shards) + int(job.get("realtime_cost_nano_usd", 0)))
    return JobProgress(
        job_id=str(job["job_id"]),
        status=shown_status(job),
        table_status=str(job.get("status") or "unknown"),
        finished=finished,
        route=route,
        input_lines=int(job.get("input_lines", 0)),
        valid=int(job.get("valid", 0)),
        invalid=int(job.get("invalid", 0)),
        batch_done=sum(view.done for view in on_batch),
        batch_total=sum(view.on_batch for view in on_batch),
        realtime_done=int(job.get("realtime_done", 0)),
        realtime_total=realtime_total,
        cost_usd=cost,
        spend=spend_of(job),
        started_at=job.get("started_at"),
        finished_at=job.get("finished_at") if finished else None,
        message=job.get("message") if finished else (job.get("refused") or job.get("budget_paused")),
        cancel_requested=job.get("cancel_requested"),
        shards=views,
    )
