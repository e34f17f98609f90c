"""Plan: stream the input file, validate and count it, and cut it into shards.

The job is identified by the file's name and the hash of its content. Planning a file that was
planned before resumes its job instead: the shards, their batches and every outcome already
collected are kept, and only what is unfinished runs again. A new execution taking a running job
over (its predecessor's history was filling up) reads the job back without the file.

Everything outside is a port handed to `JobPlanning`; handlers/plan.py builds them and calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from batchline.domain.answer_cache import cache_requested
from batchline.domain.budget import requested_job_cap, to_nano
from batchline.domain.errors import BudgetRefusedError, InputNotFoundError, ShardStateError
from batchline.domain.layout import SPEC_METADATA_KEY, content_hash, make_job_id, table_job_hash
from batchline.domain.planning import PlanSummary
from batchline.domain.records import JobRecord, ShardRecord
from batchline.domain.request_line import InvalidLine, iter_physical_lines
from batchline.domain.routing import Mode, requested_mode, route_for
from batchline.domain.statuses import REOPENED_ON_RESUME, JobStatus, ShardStatus
from batchline.topology import JOBS_REFUSED_METRIC, JOBS_RESUMED_METRIC

logger = logging.getLogger("batchline.plan")

ROUTE_REFUSED = JobStatus.REFUSED  # the budget cannot take the job: nothing is sent, Finalize says why per line


class InputSource(Protocol):
    """The input bucket, as Plan reads an uploaded file."""

    def head(self, key: str) -> tuple[str, dict[str, str]] | None: ...

    def chunks(self, key: str) -> Iterator[bytes]: ...


class TableInputs(Protocol):
    """A table job's input: its table (CSV, parquet, ...) read row by row, each row rendered into one
    request line by the job's spec, or into the reason it could not be (the row's number, its column)."""

    def lines(self, bucket: str, key: str, spec_digest: str) -> Iterable[tuple[int, bytes | InvalidLine]]: ...


def job_digest(content_sha256: str, metadata: dict[str, str]) -> str:
    """What a job's id is made of: its file's content, and for a table job its spec too."""
    spec_digest = metadata.get(SPEC_METADATA_KEY)
    return table_job_hash(content_sha256, spec_digest) if spec_digest else content_sha256


def job_id_of(source: InputSource, key: str) -> str:
    """The id Plan gives the file at `key` (its name, content and spec), or one marking it missing."""
    head = source.head(key)
    if head is None:
        return make_job_id(key, "missing")
    return make_job_id(key, job_digest(content_hash(source.chunks(key)), head[1]))


class PlanRecords(Protocol):
    """The job table as Plan writes it."""

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def put_job(self, job_id: str, **fields: Any) -> None: ...

    def update_job(self, job_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None: ...

    def add_to_job(self, job_id: str, **counts: int) -> Any: ...

    def put_shards(self, job_id: str, shards: list[ShardRecord]) -> None: ...

    def list_shards(self, job_id: str) -> list[ShardRecord]: ...

    def update_shard(self, job_id: str, shard_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> Any: ...


class BudgetHolds(Protocol):
    def hold(self, job_id: str, month: str, estimate_nano: int) -> None: ...


@dataclass(frozen=True)
class PlanDefaults:
    """What the settings decide for a job its upload does not decide."""

    job_budget_usd: float | None
    default_mode: Mode
    auto_realtime_max_requests: int
    cache: bool = True  # the `cache` setting: false turns the answer cache off for every job


@dataclass
class JobPlanning:
    """The Plan use case, with its ports.

    `plan_lines(job_id, lines, use_cache)` validates, counts and cuts the lines into the job's shard
    files (the planner with its outputs), keeping out of them, with `use_cache`, what the answer cache
    knows and what the file repeats (domain/answer_cache.py); `count(metric, value)` publishes a
    metric; `on_job(job_id)` is told the job's id as soon as it is known (the handler's logs carry it).
    """

    jobs: PlanRecords
    source: Callable[[str], InputSource]
    plan_lines: Callable[[str, Iterable[tuple[int, bytes | InvalidLine]], bool], PlanSummary]
    tables: TableInputs
    budgets: BudgetHolds
    defaults: PlanDefaults
    count: Callable[[str, int], None]
    now: Callable[[], str]
    month: Callable[[], str]
    on_job: Callable[[str], None] = lambda job_id: None

    def plan(self, bucket: str, key: str) -> dict[str, Any]:
        """Plan the uploaded file (or resume its job); the state machine's input for the job's run."""
        source = self.source(bucket)
        head = source.head(key)
        if head is None:
            raise InputNotFoundError(f"s3://{bucket}/{key} does not exist (deleted after upload, or a wrong key)")
        _, metadata = head
        digest = content_hash(source.chunks(key))
        spec_digest = metadata.get(SPEC_METADATA_KEY)
        job_id = make_job_id(key, job_digest(digest, metadata))
        self.on_job(job_id)
        job_cap = requested_job_cap(metadata, self.defaults.job_budget_usd)
        cap_fields: dict[str, Any] = {"budget_cap_nano": job_cap} if job_cap is not None else {}
        store = self.jobs
        job = store.get_job(job_id)
        if job is not None and job.planned:
            return self.resume(job, cap_fields)

        mode = requested_mode(key=key, metadata=metadata, default=self.defaults.default_mode)
        use_cache = self.defaults.cache and cache_requested(metadata)
        month = self.month()
        fields: dict[str, Any] = dict(
            status=JobStatus.PLANNING,
            bucket=bucket,
            key=key,
            mode=mode,
            started_at=self.now(),
            content_sha256=digest,
            no_cache=not use_cache,
        )
        if spec_digest:
            fields["spec_digest"] = spec_digest
        if job is None:
            store.put_job(job_id, budget_month=month, **fields, **cap_fields)
        else:  # an earlier Plan stopped half way: its counters stay, its staging files are rewritten
            store.update_job(job_id, **fields, **cap_fields)
            month = job.budget_month or month

        lines: Iterable[tuple[int, bytes | InvalidLine]] = (
            self.tables.lines(bucket, key, spec_digest) if spec_digest else iter_physical_lines(source.chunks(key))
        )
        summary = self.plan_lines(job_id, lines, use_cache)

        shards = [ShardRecord(job_id=job_id, **plan.as_dict()) for plan in summary.shards]
        route = route_for(
            mode, valid_requests=summary.valid, auto_realtime_max_requests=self.defaults.auto_realtime_max_requests
        )
        store.put_shards(job_id, shards)
        refused = self._hold_budget(job_id, month, route, shards) if shards else None
        store.update_job(
            job_id,
            status=ROUTE_REFUSED if refused else (JobStatus.RUNNING if shards else JobStatus.FINALIZING),
            planned=True,
            route=route,
            input_lines=summary.input_lines,
            valid=summary.valid,
            invalid=summary.invalid,
            cached=summary.cached,
            duplicates=summary.duplicates,
            shard_count=len(shards),
            prompt_tokens=summary.prompt_tokens,
            estimated_cost_usd=summary.estimated_cost_usd,
            estimated_cost_usd_if_realtime=summary.estimated_cost_usd_if_realtime,
            **_refusal(refused),
        )
        logger.info(
            "planned",
            extra={
                "input_lines": summary.input_lines,
                "invalid": summary.invalid,
                "cached": summary.cached,
                "duplicates": summary.duplicates,
                "shards": len(shards),
                "route": route,
            },
        )
        return {
            "job_id": job_id,
            "route": ROUTE_REFUSED if refused else route,
            "resumed": False,
            "input_lines": summary.input_lines,
            "valid": summary.valid,
            "invalid": summary.invalid,
            "shard_count": len(shards),
            "shards": [] if refused else _map_items(shards),
        }

    def take_over(self, job_id: str, previous_execution: str) -> dict[str, Any]:
        """A new execution goes on with a running job (its predecessor's history was filling up).

        Nothing about the job changes: not its budget hold, not a cancel the user asked for, not its
        resume count. The file is not read again either: the job's shards are what runs.
        """
        store = self.jobs
        job = store.get_job(job_id)
        if job is None or not job.planned or job.route is None:
            raise ShardStateError(f"job {job_id} handed over by {previous_execution} has no planned record")
        self.on_job(job_id)
        store.add_to_job(job_id, handovers=1)
        logger.info("took the job over", extra={"from_execution": previous_execution})
        shards = store.list_shards(job_id)
        route = job.route
        return {
            "job_id": job_id,
            # A realtime job's requests are queued already: the new execution only waits for them.
            "route": "realtime_wait" if route == "realtime" else route,
            "resumed": True,
            "input_lines": job.input_lines,
            "valid": job.valid,
            "invalid": job.invalid,
            "shard_count": len(shards),
            "shards": _map_items([shard for shard in shards if shard.status != ShardStatus.COLLECTED]),
        }

    def resume(self, job: JobRecord, cap_fields: dict[str, Any]) -> dict[str, Any]:
        """The same file again: keep everything done, run only what is unfinished."""
        job_id, route = job.job_id, job.route or ""
        store = self.jobs
        shards = store.list_shards(job_id)
        # A new upload may bring a bigger budget, and undoes an earlier cancel: the user asks again.
        # Requests a run could not send are sent again; what was answered stays answered.
        store.update_job(
            job_id,
            remove=("cancel_requested", "halted", "execution_stopped"),
            realtime_unsent=0,
            realtime_done_at_start=job.realtime_done,
            **cap_fields,
        )
        for index, shard in enumerate(shards):
            # What stopped short runs again: the poll loop passes over shards that ended.
            reopened = REOPENED_ON_RESUME.get(shard.status)
            if reopened:
                store.update_shard(job_id, shard.shard_id, status=reopened, remove=("failure", "step_errors"))
                shards[index] = msgspec.structs.replace(shard, status=reopened)
        refused = self._hold_budget(job_id, job.budget_month or self.month(), route, shards)
        resumes = job.resumes + 1
        store.update_job(
            job_id,
            status=ROUTE_REFUSED if refused else JobStatus.RUNNING,
            resumes=resumes,
            resumed_at=self.now(),
            **({"refused": refused} if refused else {"refused": None}),
        )
        unfinished = [shard for shard in shards if shard.status != ShardStatus.COLLECTED]
        self.count(JOBS_RESUMED_METRIC, 1)
        logger.info("resumed", extra={"resumes": resumes, "shards": len(shards), "unfinished": len(unfinished)})
        return {
            "job_id": job_id,
            "route": ROUTE_REFUSED if refused else route,
            "resumed": True,
            "input_lines": job.input_lines,
            "valid": job.valid,
            "invalid": job.invalid,
            "shard_count": len(shards),
            "shards": [] if refused else _map_items(unfinished),
        }

    def _hold_budget(self, job_id: str, month: str, route: str, shards: list[ShardRecord]) -> str | None:
        """Reserve the job's estimate; the refusal's message when it does not fit."""
        try:
            self.budgets.hold(job_id, month, _estimate_nano(route, shards))
        except BudgetRefusedError as exc:
            logger.warning("refused by the budget", extra={"reason": str(exc)})
            self.count(JOBS_REFUSED_METRIC, 1)
            return str(exc)
        return None


def _refusal(refused: str | None) -> dict[str, Any]:
    """The job's `refused` field when the budget refused it (absent, not null, otherwise)."""
    return {"refused": refused} if refused else {}


def _map_items(shards: list[ShardRecord]) -> list[dict[str, Any]]:
    # Only what each Map iteration needs: the state payload must stay far below 256 KB.
    return [
        {"job_id": s.job_id, "shard_id": s.shard_id, "url": s.url, "model": s.model, "requests": s.requests}
        for s in sorted(shards, key=lambda shard: shard.shard_id)
    ]


def _estimate_nano(route: str, shards: list[ShardRecord]) -> int:
    """What the unfinished shards may cost, at the price of the route they take."""
    return sum(
        to_nano(shard.estimated_cost_usd_if_realtime if route == "realtime" else shard.estimated_cost_usd)
        for shard in shards
        if shard.status != ShardStatus.COLLECTED
    )
