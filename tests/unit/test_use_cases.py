"""The Plan and Finalize use cases against in-memory fakes of their ports: no moto, no provider.

A job is walked through what the cold path leaves behind (a collected shard with results and a
final error, a shard cancelled with requests never run, invalid lines, realtime outcomes) and
the outputs are checked the way a user reads them: every line once, in input order, with why.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import orjson
import pytest
from batchline.domain.errors import BudgetRefusedError
from batchline.domain.layout import SPEC_METADATA_KEY, JobLayout
from batchline.domain.planning import PlanSummary, ShardPlan, encode_manifest_entry
from batchline.domain.records import JobRecord, ShardRecord, plain
from batchline.domain.request_line import InvalidLine
from batchline.workflow.finalizing import Finalization
from batchline.workflow.planning_job import JobPlanning, PlanDefaults
from loop_fakes import MemoryObjects

PREFIX = "jobs"


class MemoryJobs:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.shards: dict[str, dict[str, dict[str, Any]]] = {}

    def get_job(self, job_id: str) -> JobRecord | None:
        return msgspec.convert(self.jobs[job_id], JobRecord) if job_id in self.jobs else None

    def put_job(self, job_id: str, **fields: Any) -> None:
        self.jobs[job_id] = {"job_id": job_id, **fields}

    def update_job(self, job_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        job = self.jobs.setdefault(job_id, {"job_id": job_id})
        job.update(fields)
        for name in remove:
            job.pop(name, None)

    def add_to_job(self, job_id: str, **counts: int) -> None:
        job = self.jobs[job_id]
        for name, count in counts.items():
            job[name] = job.get(name, 0) + count

    def put_shards(self, job_id: str, shards: list[ShardRecord]) -> None:
        self.shards[job_id] = {shard.shard_id: plain(shard) for shard in shards}

    def list_shards(self, job_id: str) -> list[ShardRecord]:
        return [msgspec.convert(shard, ShardRecord) for shard in self.shards.get(job_id, {}).values()]

    def update_shard(self, job_id: str, shard_id: str, *, remove: tuple[str, ...] = (), **fields: Any) -> None:
        shard = self.shards[job_id][shard_id]
        shard.update(fields)
        for name in remove:
            shard.pop(name, None)

    def progress(self, job_id: str) -> list[dict[str, Any]]:
        return []


class MemoryOutcomes:
    def __init__(self, records: Iterable[dict] = ()) -> None:
        self.raw = [orjson.dumps(record) for record in records]

    def records(self, job_id: str) -> Iterable[bytes]:
        return list(self.raw)


class MemoryOrdering:
    """Outcomes in line order; an answer replaces an unsent record, never another answer."""

    def __init__(self) -> None:
        self.by_line: dict[int, tuple[bool, bool, str | None, bytes]] = {}

    def __enter__(self) -> MemoryOrdering:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_all(self, raws: Iterable[bytes]) -> None:
        for raw in raws:
            record = orjson.loads(raw)
            answered = not record.get("unsent")
            if record["line"] in self.by_line and self.by_line[record["line"]][0]:
                continue
            self.by_line[record["line"]] = (answered, "response" in record, record.get("answered_at"), raw)

    def in_line_order(self) -> Iterator[tuple[int, bool, str | None, bytes]]:
        for line in sorted(self.by_line):
            _, succeeded, at, raw = self.by_line[line]
            yield line, succeeded, at, raw


class MemoryBudgets:
    def __init__(self, *, room_nano: int | None = None) -> None:
        self.room_nano = room_nano
        self.held: dict[str, int] = {}
        self.released: list[str] = []

    @property
    def month_cap_nano(self) -> int | None:
        return None

    def month_spent_nano(self, month: str) -> int:
        return 0

    def hold(self, job_id: str, month: str, estimate_nano: int) -> None:
        if self.room_nano is not None and estimate_nano > self.room_nano:
            raise BudgetRefusedError(f"the job's estimate does not fit: {estimate_nano} nano-dollars")
        self.held[job_id] = estimate_nano

    def release_hold(self, job_id: str, month: str) -> int:
        self.released.append(job_id)
        return self.held.pop(job_id, 0)


def shard(job_id: str, shard_id: str, **fields: Any) -> ShardRecord:
    return ShardRecord(
        job_id=job_id, shard_id=shard_id, url="/v1/chat/completions", model="gpt-4o-mini", requests=2, **fields
    )


class NoTables:
    """The table ports of jobs that are no table jobs: never called."""

    def lines(self, bucket: str, key: str, spec_digest: str) -> Any:
        raise AssertionError("a request file's job read a table")

    def write(self, job: Any, layout: Any) -> str:
        raise AssertionError("a request file's job wrote a results table")


def result(line: int, custom_id: str) -> dict:
    return {"custom_id": custom_id, "line": line, "route": "batch", "response": {"status_code": 200, "body": {}}}


def error(line: int, custom_id: str, code: str) -> dict:
    return {"custom_id": custom_id, "line": line, "stage": "provider", "code": code, "message": code}


def finalization(store: MemoryObjects, jobs: MemoryJobs, outcomes: MemoryOutcomes | None = None) -> Finalization:
    return Finalization(
        jobs=jobs,
        storage=store,
        outcomes=outcomes or MemoryOutcomes(),
        outcome_index=MemoryOrdering,
        budgets=MemoryBudgets(),
        output_prefix=PREFIX,
        output_bucket="out-bucket",
        now=lambda: "2026-12-04T10:00:00+00:00",
        source=lambda bucket: MemoryObjects(),
        tables=NoTables(),
    )


@pytest.fixture
def cancelled_batch_job() -> tuple[MemoryObjects, MemoryJobs, JobLayout]:
    """Lines 1-6: line 3 invalid; shard A (1, 2, 4) collected with line 4 failed for good; shard B
    (5, 6) cancelled by the user with its next round, both requests, never run."""
    store, jobs, layout = MemoryObjects(), MemoryJobs(), JobLayout("job-1", PREFIX)
    jobs.put_job("job-1", input_lines=6, valid=5, invalid=1, route="batch", cancel_requested="now", halted="stop")
    jobs.put_shards(
        "job-1",
        [
            shard("job-1", "A", status="collected", rounds_collected=1, round=0, cost_nano_usd=2_000),
            shard("job-1", "B", status="cancelled", rounds_collected=1, round=1),
        ],
    )
    store.put(layout.invalid_lines, orjson.dumps({**error(3, "c3", "invalid_json"), "stage": "validation"}) + b"\n")
    store.put(layout.round_results("A", 0), b"".join(orjson.dumps(result(n, f"c{n}")) + b"\n" for n in (1, 2)))
    store.put(layout.round_errors("A", 0), orjson.dumps(error(4, "c4", "invalid_request")) + b"\n")
    store.put(layout.round_results("B", 0), b"")
    store.put(layout.round_errors("B", 0), b"")
    store.put(layout.round_manifest("B", 1), encode_manifest_entry(5, "c5") + encode_manifest_entry(6, "c6"))
    return store, jobs, layout


def test_finalize_merges_every_line_once_in_input_order_and_says_why_each_failed(cancelled_batch_job):
    store, jobs, layout = cancelled_batch_job

    summary = finalization(store, jobs).finalize("job-1")

    assert [r["line"] for r in store.jsonl(layout.results)] == [1, 2]
    errors = store.jsonl(layout.errors)
    assert [(e["line"], e["code"]) for e in errors] == [(3, "invalid_json"), (4, "invalid_request"), (5, "cancelled"),
                                                        (6, "cancelled")]  # fmt: skip
    assert "the same file uploaded again sends it" in errors[-1]["message"]
    assert (summary["status"], summary["succeeded"], summary["failed"], summary["invalid"]) == ("cancelled", 2, 3, 1)
    assert summary["outputs"]["results"] == f"s3://out-bucket/{layout.results}"
    assert orjson.loads(store.objects[layout.summary]) == summary
    assert jobs.jobs["job-1"]["status"] == "cancelled", "the job item says how it ended"


def test_the_interim_account_counts_what_has_no_outcome_yet_as_pending_and_changes_nothing(cancelled_batch_job):
    store, jobs, layout = cancelled_batch_job
    before = dict(jobs.jobs["job-1"])

    summary = finalization(store, jobs).interim("job-1", "interrupted (Ctrl-C)")

    assert (summary["status"], summary["pending"], summary["succeeded"]) == ("interrupted", 2, 2)
    assert [e["line"] for e in store.jsonl(layout.interim("errors.jsonl"))] == [3, 4]
    assert layout.results not in store.objects and jobs.jobs["job-1"] == before


def test_realtime_outcomes_join_their_lines_and_a_line_without_one_is_reported():
    store, jobs, layout = MemoryObjects(), MemoryJobs(), JobLayout("job-2", PREFIX)
    jobs.put_job("job-2", input_lines=3, valid=3, invalid=0, route="realtime", realtime_cost_nano_usd=9_000)
    jobs.put_shards("job-2", [shard("job-2", "A", status="realtime", round=0)])
    store.put(layout.round_manifest("A", 0), b"".join(encode_manifest_entry(n, f"r{n}") for n in (1, 2, 3)))
    outcomes = MemoryOutcomes(
        [
            {**result(2, "r2"), "route": "realtime", "answered_at": "2026-12-04T09:59:59.5+00:00"},
            {**error(1, "r1", "server_error"), "unsent": True},  # handed back, then answered below
            {**result(1, "r1"), "route": "realtime", "answered_at": "2026-12-04T09:59:58.1+00:00"},
        ]
    )

    summary = finalization(store, jobs, outcomes).finalize("job-2")

    assert [r["custom_id"] for r in store.jsonl(layout.results)] == ["r1", "r2"]
    assert all("answered_at" not in r for r in store.jsonl(layout.results)), "internal fields stay internal"
    [missing] = store.jsonl(layout.errors)
    assert (missing["line"], missing["code"]) == (3, "not_completed")
    assert summary["cost_usd"] == pytest.approx(9e-6) and summary["status"] == "completed_with_errors"


def planning(jobs: MemoryJobs, source: MemoryObjects, budgets: MemoryBudgets, counted: list) -> JobPlanning:
    def plan_lines(job_id: str, lines: Iterable[tuple[int, bytes]], use_cache: bool) -> PlanSummary:
        count = sum(1 for _ in lines)  # (line number, line) of every non-blank line
        shard = ShardPlan(
            "00001", "/v1/chat/completions", "gpt-4o-mini", requests=count, bytes=100 * count,
            prompt_tokens=1000, estimated_cost_usd=0.25, estimated_cost_usd_if_realtime=0.5,
        )  # fmt: skip
        return PlanSummary(input_lines=count, valid=count, invalid=0, prompt_tokens=100 * count, shards=[shard],
                           estimated_cost_usd=0.25, estimated_cost_usd_if_realtime=0.5)  # fmt: skip

    return JobPlanning(
        jobs=jobs,
        source=lambda bucket: source,
        plan_lines=plan_lines,
        tables=NoTables(),
        budgets=budgets,
        defaults=PlanDefaults(job_budget_usd=None, default_mode="batch", auto_realtime_max_requests=100),
        count=lambda name, value: counted.append(name),
        now=lambda: "2026-12-04T10:00:00+00:00",
        month=lambda: "2026-12",
    )


def test_plan_then_the_same_file_again_resumes_the_job_and_reopens_what_stopped_short():
    jobs, source, budgets, counted = MemoryJobs(), MemoryObjects(), MemoryBudgets(), []
    source.put("feedback.jsonl", b'{"a": 1}\n{"a": 2}\n')
    use_case = planning(jobs, source, budgets, counted)

    first = use_case.plan("in", "feedback.jsonl")
    job_id = first["job_id"]
    jobs.update_shard(job_id, "00001", status="cancelled")
    again = use_case.plan("in", "feedback.jsonl")

    assert (first["resumed"], first["route"], first["valid"]) == (False, "batch", 2)
    assert again["resumed"] and [shard["shard_id"] for shard in again["shards"]] == ["00001"]
    assert jobs.shards[job_id]["00001"]["status"] == "planned" and jobs.jobs[job_id]["resumes"] == 1
    assert counted == ["JobsResumed"] and budgets.held[job_id] == 250_000_000


def test_a_job_whose_estimate_does_not_fit_is_refused_before_anything_is_sent():
    jobs, source, counted = MemoryJobs(), MemoryObjects(), []
    source.put("big.jsonl", b'{"a": 1}\n')

    answer = planning(jobs, source, MemoryBudgets(room_nano=1), counted).plan("in", "big.jsonl")

    assert answer["route"] == "refused" and answer["shards"] == []
    assert "does not fit" in jobs.jobs[answer["job_id"]]["refused"] and counted == ["JobsRefusedByBudget"]


class RecordedTables:
    """Table ports that render every row of a fake table into one chat request, and note what they wrote."""

    def __init__(self, rows: int, *, failing_row: int | None = None, write_fails: bool = False) -> None:
        self.rows, self.failing_row, self.write_fails = rows, failing_row, write_fails
        self.asked: list[tuple[str, str, str]] = []
        self.written: list[str] = []

    def lines(self, bucket: str, key: str, spec_digest: str) -> Iterator[tuple[int, Any]]:
        self.asked.append((bucket, key, spec_digest))
        for row in range(1, self.rows + 1):
            if row == self.failing_row:
                yield row, InvalidLine(line=row, custom_id=None, code="row_error", message=f"row {row}: no text")
            else:
                yield row, b'{"custom_id": "r%d"}' % row

    def write(self, job: Any, layout: JobLayout) -> str:
        if self.write_fails:
            raise OSError("disk full")
        self.written.append(job.job_id)
        return layout.table("parquet")


def test_a_table_job_is_planned_from_its_rendered_rows_and_named_by_its_table_and_its_spec():
    jobs, source, counted = MemoryJobs(), MemoryObjects(), []
    source.put("feedback.csv", b"id,text\n1,a\n2,b\n3,c\n")
    source.metadata["feedback.csv"] = {SPEC_METADATA_KEY: "spec-one"}
    tables = RecordedTables(3, failing_row=2)
    use_case = planning(jobs, source, MemoryBudgets(), counted)
    use_case.tables = tables
    seen: list[tuple[int, Any]] = []
    plan_lines = use_case.plan_lines

    def recording(job_id: str, lines: Iterable[tuple[int, Any]], use_cache: bool) -> PlanSummary:
        listed = list(lines)
        seen.extend(listed)
        return plan_lines(job_id, iter(listed), use_cache)

    use_case.plan_lines = recording

    first = use_case.plan("in", "feedback.csv")
    source.metadata["feedback.csv"] = {SPEC_METADATA_KEY: "spec-two"}  # the same table, another template
    second = use_case.plan("in", "feedback.csv")

    assert tables.asked == [("in", "feedback.csv", "spec-one"), ("in", "feedback.csv", "spec-two")]
    assert [row for row, _ in seen[:3]] == [1, 2, 3] and isinstance(seen[1][1], InvalidLine)
    assert first["job_id"] != second["job_id"] and not second["resumed"], "a changed spec is a new job"
    assert jobs.jobs[first["job_id"]]["spec_digest"] == "spec-one"


def test_finalize_writes_a_table_jobs_results_table_and_says_why_when_it_cannot(cancelled_batch_job):
    store, jobs, layout = cancelled_batch_job
    jobs.update_job("job-1", spec_digest="spec-one", bucket="in", key="feedback.csv")
    use_case = finalization(store, jobs)
    use_case.tables = RecordedTables(6)

    summary = use_case.finalize("job-1")

    assert use_case.tables.written == ["job-1"]
    assert summary["outputs"]["table"] == f"s3://out-bucket/{layout.table('parquet')}"
    use_case.tables = RecordedTables(6, write_fails=True)
    again = use_case.finalize("job-1")
    assert "table" not in again["outputs"] and again["table_error"] == "OSError: disk full"
    assert again["outputs"]["results"] == f"s3://out-bucket/{layout.results}", "the JSONL outputs are written"
