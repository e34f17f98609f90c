"""Budget counters and the enqueued-token ledger against moto's DynamoDB, under concurrency."""

from __future__ import annotations

import threading

import boto3
import pytest
from batchline.adapters.admission import DynamoAdmissionLedger
from batchline.adapters.budgets import DynamoBudgets
from batchline.domain.budget import to_nano
from batchline.domain.errors import BudgetRefusedError
from batchline.topology import job_table_definition
from moto import mock_aws

from batchline_local import moto_patches

MONTH = "2026-11"


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    moto_patches.install()  # conditional writes atomic across threads, as in DynamoDB
    with mock_aws():
        yield boto3.resource("dynamodb").create_table(**job_table_definition("jobs"))


def new_job(table, job_id: str, cap_usd: float | None) -> None:
    item = {"pk": f"JOB#{job_id}", "sk": "JOB", "job_id": job_id}
    if cap_usd is not None:
        item["budget_cap_nano"] = to_nano(cap_usd)
    table.put_item(Item=item)


def run_threads(count: int, target) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_job_whose_estimate_does_not_fit_is_refused_with_the_estimate_and_the_room_left(table):
    budgets = DynamoBudgets(table, month_cap_nano=to_nano(10.0))
    new_job(table, "big", cap_usd=5.0)
    with pytest.raises(BudgetRefusedError) as refused:
        budgets.hold("big", MONTH, to_nano(7.5))
    assert "$7.5000" in str(refused.value) and "$5.0000 left of $5.0000" in str(refused.value)
    assert "job budget" in str(refused.value)
    job, month = budgets.usage("big", MONTH)
    assert (job.committed_nano, month.committed_nano) == (0, 0)  # nothing was reserved

    new_job(table, "first", cap_usd=None)
    budgets.hold("first", MONTH, to_nano(8.0))
    new_job(table, "second", cap_usd=None)
    with pytest.raises(BudgetRefusedError, match=r"monthly budget: \$2\.0000 left of \$10\.0000"):
        budgets.hold("second", MONTH, to_nano(3.0))


def test_holding_twice_reserves_once_and_release_gives_back_only_what_is_unused(table):
    budgets = DynamoBudgets(table, month_cap_nano=None)
    new_job(table, "job", cap_usd=1.0)
    budgets.hold("job", MONTH, 600)
    budgets.hold("job", MONTH, 600)  # a retried Plan
    job, month = budgets.usage("job", MONTH)
    assert (job.committed_nano, job.hold_nano, month.committed_nano) == (600, 600, 600)

    assert budgets.take("job", MONTH, 200, piece="shard-1#r0")
    assert budgets.take("job", MONTH, 200, piece="shard-1#r0")  # the same piece again: no second reservation
    assert budgets.settle("job", MONTH, "shard-1#r0", actual_nano=150)
    assert not budgets.settle("job", MONTH, "shard-1#r0", actual_nano=150)  # settled once
    assert budgets.release_hold("job", MONTH) == 400
    job, month = budgets.usage("job", MONTH)
    assert (job.committed_nano, job.hold_nano, month.committed_nano) == (150, 0, 150)
    assert budgets.month_spent_nano(MONTH) == 150


def test_concurrent_workers_never_reserve_past_the_cap(table):
    budgets = DynamoBudgets(table, month_cap_nano=None)
    new_job(table, "job", cap_usd=1e-6)  # 1,000 nano-dollars
    granted: list[int] = []

    def worker() -> None:
        for _ in range(15):
            if budgets.take("job", MONTH, 30):
                granted.append(30)

    run_threads(8, worker)
    assert sum(granted) == 990  # 33 reservations of 30 fit in 1,000; the 34th never does
    job, _ = budgets.usage("job", MONTH)
    assert job.committed_nano == 990 <= job.cap_nano


def test_a_reservation_moves_out_of_the_hold_before_it_reserves_afresh(table):
    budgets = DynamoBudgets(table, month_cap_nano=to_nano(1.0))
    new_job(table, "job", cap_usd=None)
    budgets.hold("job", MONTH, 100)
    assert budgets.take("job", MONTH, 80)
    job, month = budgets.usage("job", MONTH)
    assert (job.committed_nano, job.hold_nano, month.committed_nano) == (100, 20, 100)
    assert budgets.take("job", MONTH, 80)  # the hold has 20 left: a fresh reservation against the caps
    job, month = budgets.usage("job", MONTH)
    assert (job.committed_nano, job.hold_nano, month.committed_nano) == (180, 20, 180)


def test_the_enqueued_token_ledger_admits_what_fits_once_and_releases_once(table):
    ledger = DynamoAdmissionLedger(table)
    assert ledger.admit("gpt-4o-mini", "job#1#r0", 600, limit=1000)
    assert ledger.admit("gpt-4o-mini", "job#1#r0", 600, limit=1000)  # a retried Submit
    assert not ledger.admit("gpt-4o-mini", "job#2#r0", 600, limit=1000)
    assert ledger.admit("gpt-4o", "job#3#r0", 600, limit=1000)  # every model has its own queue
    assert ledger.enqueued_tokens("gpt-4o-mini") == 600
    assert ledger.release("gpt-4o-mini", "job#1#r0")
    assert not ledger.release("gpt-4o-mini", "job#1#r0")
    assert ledger.enqueued_tokens("gpt-4o-mini") == 0
    assert ledger.admit("gpt-4o-mini", "job#2#r0", 600, limit=1000)


def test_concurrent_submits_never_admit_past_the_queue_limit(table):
    ledger = DynamoAdmissionLedger(table)
    admitted: list[str] = []
    lock = threading.Lock()
    counter = iter(range(10_000))

    def submitter() -> None:
        for _ in range(10):
            with lock:
                ticket = f"t{next(counter)}"
            if ledger.admit("gpt-4o-mini", ticket, 70, limit=1000):
                admitted.append(ticket)

    run_threads(8, submitter)
    assert len(admitted) == 14  # 14 x 70 = 980 fit under 1,000
    assert ledger.enqueued_tokens("gpt-4o-mini") == 980
