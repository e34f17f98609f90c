"""What `batchline status` and `batchline estimate` print in an 80-column terminal: everything, whole.

Ids, model names and batch ids may fold onto more lines; the counts and the dollars never do, and
no cell is cut short with "…". The job commands read a fake of the jobs client (no stack needed):
the tables are what is under test.
"""

from __future__ import annotations

import json
import re

import msgspec
import pytest
from batchline.domain.records import JobRecord, ShardRecord
from batchline.domain.statuses import BatchStatus, ShardStatus
from batchline.presentation.numbers import usd
from lines import chat, embedding
from typer.testing import CliRunner

from batchline_cli import cli
from batchline_cli.job_progress import job_progress

NARROW = {"COLUMNS": "80"}
JOB_ID = "customer-feedback-reviews-2026-11-98a10682c092196b"
BATCH_ID = "batch_6912a0c4e5f08190b1c2d3e4f5a6b7c8"


def job_item(status: str = "running") -> JobRecord:
    """A job's record as the job table returns it."""
    return msgspec.convert(
        {
            "job_id": JOB_ID,
            "status": status,
            "route": "batch",
            "input_lines": 123_456,
            "valid": 123_450,
            "invalid": 6,
            "started_at": "2026-11-23T07:00:00.000+00:00",
            "cost_usd": 1234.5678,
            "budget_cap_nano": 2_000 * 10**9,
            "spent_nano": 1_234_567_800_000,
            "message": "123,400 of 123,450 requests succeeded",
        },
        JobRecord,
    )


def shard_items() -> list[ShardRecord]:
    return [
        ShardRecord(
            job_id=JOB_ID,
            shard_id=f"{index:05d}",
            model="gpt-4.1-nano-2025-04-14",
            url="/v1/chat/completions",
            requests=41_150,
            round_requests=41_150,
            status=ShardStatus.SUBMITTED,
            batch_id=BATCH_ID,
            batch_status=BatchStatus.IN_PROGRESS,
            request_counts={"total": 41_150, "completed": 12_345, "failed": 12},
        )
        for index in range(3)
    ]


class FakeJobsClient:
    """The job table as the commands read it: one job, running, then (after `runs_for` reads) finished."""

    target = type("Target", (), {"label": "the local stack at http://127.0.0.1:5000", "is_local": True})()

    def __init__(self, runs_for: int = 0) -> None:
        self.reads, self.runs_for = 0, runs_for

    def recent_jobs(self, limit: int):
        return [job_progress(job_item(), shard_items()), job_progress(job_item("succeeded"), [])]

    def progress(self, job_id: str):
        self.reads += 1
        return job_progress(job_item("running" if self.reads <= self.runs_for else "succeeded"), shard_items())


@pytest.fixture
def jobs(monkeypatch):
    def install(client: FakeJobsClient) -> None:
        monkeypatch.setattr(cli, "_jobs_client", lambda *args: client)

    return install


def assert_fits(text: str) -> None:
    assert "…" not in text
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide


def test_the_recent_jobs_fit_80_columns_with_the_whole_job_id_its_counts_and_its_cost(jobs):
    jobs(FakeJobsClient())
    result = CliRunner().invoke(cli.app, ["status"], env=NARROW)

    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    lines = result.stdout.splitlines()
    assert sum(JOB_ID in line for line in lines) == 2  # each on one line, whole
    assert "123,450/123,450" in result.stdout and "$1,234.57" in result.stdout
    assert "succeeded · batch · 2026-11-23 07:00:00" in result.stdout  # what gave way: under the id


def test_a_jobs_shards_fit_80_columns_and_the_batch_ids_fold_whole(jobs):
    jobs(FakeJobsClient())
    result = CliRunner().invoke(cli.app, ["status", JOB_ID], env=NARROW)

    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    assert f"job {JOB_ID}: succeeded" in result.stdout
    assert "12,357/41,150" in result.stdout and "(12 failed)" in result.stdout
    assert re.sub(r"\s+", "", result.stdout).count(BATCH_ID) == 3  # folded, never cut
    assert "$1,234.57 spent of $2,000.00 (61.7%)" in result.stdout


def test_watching_a_job_leaves_its_last_frame_once_and_ends_with_a_newline(jobs):
    jobs(FakeJobsClient(runs_for=2))
    result = CliRunner().invoke(cli.app, ["status", JOB_ID, "--watch", "--interval", "0.2"], env=NARROW)

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("123,400 of 123,450 requests succeeded\n")  # the prompt starts on its own line
    assert result.stdout.count(f"job {JOB_ID}: ") == 1  # the last frame, not printed again after it


def test_the_estimate_fits_80_columns_with_every_dollar_figure_whole(tmp_path):
    path = tmp_path / "mixed.jsonl"
    long_answers = [chat(f"c{i}", model="gpt-4.1-nano-2025-04-14", max_tokens=16_000) for i in range(400)]
    path.write_text("\n".join([*long_answers, embedding("e-1")]) + "\n")

    table = CliRunner().invoke(cli.app, ["estimate", str(path), "--model", "gpt-4o"], env=NARROW)
    figures = json.loads(CliRunner().invoke(cli.app, ["estimate", str(path), "--model", "gpt-4o", "--json"]).stdout)

    assert table.exit_code == 0, table.output
    tables = table.stdout.split("shards: ")[0]  # the notes under the tables are soft-wrapped by the terminal
    assert_fits(tables)
    assert "$1.28" in table.stdout and "$32.01" in table.stdout  # cents from a dollar up
    for cost in (figures["cost_usd_batch"], figures["cost_usd_realtime"], *figures["models"][0].values()):
        if isinstance(cost, float):
            assert usd(cost) in table.stdout
    assert "6,400,000" in table.stdout and "<$0.0001" in table.stdout  # separators; a tiny cost is not $0
