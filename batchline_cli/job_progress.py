"""How far along a job is, read from its items in the job table: plain values, no AWS.

The job item holds the plan (valid requests, route), the realtime counters, the budget counters
and, once Finalize ran, the summary's figures. Each shard item holds its status, its round, its
batch and the batch's last seen ``request_counts``, and the tally of the rounds it collected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from batchline.domain.budget import to_usd
from batchline.domain.records import JobRecord, ShardRecord
from batchline.domain.statuses import BATCH_ENDED, ENDED_SHARD_STATUSES, JobStatus, ShardStatus

FINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.PAUSED, JobStatus.CANCELLED, JobStatus.FAILED}
)


def job_finished(job: JobRecord) -> bool:
    """Finalize has written the outputs of the job's last run (a resumed job runs again)."""
    return job.status in FINAL_STATUSES


def shown_status(job: JobRecord) -> str:
    """The job's status as a person thinks of it: a cancelled job says so, before and after it ends."""
    if job.cancel_requested:
        if job_finished(job):
            return JobStatus.CANCELLED.value
        return "stopped" if job.execution_stopped else "cancelling"  # `cancel --now`: no outputs
    return job.status.value


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
        return bool(self.batch_id) and self.batch_status not in BATCH_ENDED


def shard_progress(shard: ShardRecord) -> ShardProgress:
    requests = shard.requests
    round_size, _, _ = shard.round_figures()
    counts = shard.request_counts
    batch_id = shard.batch_id
    # request_counts stay on the shard after its round was collected: only the current batch's count.
    current = bool(batch_id) and counts.get("total", -1) == round_size
    completed = counts.get("completed", 0) if current else None
    failed = counts.get("failed", 0) if current else None
    sent_realtime = round_size if shard.status == ShardStatus.REALTIME else 0
    if shard.status in ENDED_SHARD_STATUSES:
        # Nothing more to come from a batch: a round sent realtime shows on the realtime route's bar.
        done = requests - sent_realtime
    else:
        done = shard.succeeded + shard.failed + (completed or 0) + (failed or 0)
    return ShardProgress(
        shard_id=shard.shard_id,
        model=shard.current_model,
        url=shard.url,
        status=shard.status.value,
        round=shard.round,
        requests=requests,
        done=min(done, requests),
        batch_id=batch_id,
        batch_status=shard.batch_status.value if batch_id and shard.batch_status else None,
        batch_completed=completed,
        batch_failed=failed,
        batch_total=counts["total"] if current else None,
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


def spend_of(job: JobRecord) -> Spend:
    cap = job.budget_cap_nano
    spent = job.spent_nano
    held = max(0, job.hold_nano)
    in_flight = max(0, job.committed_nano - held - spent)
    return Spend(
        cap_usd=None if cap is None else to_usd(cap),
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


def job_progress(job: JobRecord, shards: list[ShardRecord]) -> JobProgress:
    """The progress of one job from its job record and its shard records (none for a listing)."""
    finished = job_finished(job)
    views = [shard_progress(shard) for shard in sorted(shards, key=lambda s: s.shard_id)]
    on_batch = [] if job.route == "realtime" else views
    if finished:
        cost = job.cost_usd
    else:
        cost = to_usd(sum(s.cost_nano_usd for s in shards) + job.realtime_cost_nano_usd)
    return JobProgress(
        job_id=job.job_id,
        status=shown_status(job),
        table_status=job.status.value,
        finished=finished,
        route=job.route,
        input_lines=job.input_lines or 0,
        valid=job.valid,
        invalid=job.invalid,
        batch_done=sum(view.done for view in on_batch),
        batch_total=sum(view.on_batch for view in on_batch),
        realtime_done=job.realtime_done,
        realtime_total=job.realtime_total,
        cost_usd=cost,
        spend=spend_of(job),
        started_at=job.started_at,
        finished_at=job.finished_at if finished else None,
        message=job.message if finished else (job.refused or job.budget_paused),
        cancel_requested=job.cancel_requested,
        shards=views,
    )
