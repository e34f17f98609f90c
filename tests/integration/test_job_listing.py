"""`batchline status` lists the latest jobs from an index that holds jobs alone (moto's DynamoDB)."""

from __future__ import annotations

import boto3
import pytest
from batchline.adapters.job_store import JobStore
from batchline.domain.records import ShardRecord
from batchline.topology import job_table_definition
from moto import mock_aws

CHAT = "/v1/chat/completions"


@pytest.fixture
def store(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        resource = boto3.resource("dynamodb")
        resource.create_table(**job_table_definition("jobs"))
        yield JobStore("jobs", resource=resource)


class CountingTable:
    """The table, with the items each read returned counted: what a read costs in DynamoDB."""

    def __init__(self, table) -> None:
        self._table = table
        self.items_read = 0
        self.scans = 0

    def query(self, **kwargs):
        page = self._table.query(**kwargs)
        self.items_read += len(page["Items"])
        return page

    def scan(self, **kwargs):
        self.scans += 1
        return self._table.scan(**kwargs)


def test_the_latest_jobs_come_newest_first_reading_only_those_jobs(store):
    for day in range(1, 8):
        job_id = f"job-{day}"
        store.put_job(job_id, status="running", started_at=f"2026-12-0{day}T10:00:00.000+00:00")
        shards = [
            ShardRecord(job_id=job_id, shard_id=f"{n:05d}", url=CHAT, model="gpt-4o-mini", requests=10)
            for n in range(20)
        ]
        store.put_shards(job_id, shards)
    store._table = counting = CountingTable(store._table)

    latest = store.recent_jobs(3)

    assert [job.job_id for job in latest] == ["job-7", "job-6", "job-5"]
    assert counting.scans == 0 and counting.items_read == 3, "not the 147 items of the table"


def test_a_job_replanned_moves_up_and_a_job_without_a_start_is_written_without_error(store):
    store.put_job("old", status="succeeded", started_at="2026-12-01T10:00:00.000+00:00")
    store.put_job("new", status="succeeded", started_at="2026-12-02T10:00:00.000+00:00")
    store.update_job("old", started_at="2026-12-03T10:00:00.000+00:00")  # the same file planned again
    store.update_job("never-planned", status="failed", started_at=None)  # Finalize of a missing input

    assert [job.job_id for job in store.recent_jobs(10)] == ["old", "new"]
    assert store.get_job("never-planned").status == "failed"
