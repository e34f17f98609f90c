"""Finalize writes report.html beside summary.json, drawn from the job's own records (moto + the emulator)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import boto3
import pytest
from batchline import wiring
from batchline.handlers import enqueue, finalize, plan, worker
from batchline.settings import load_settings, runtime_environment_variables
from batchline.topology import job_table_definition
from lines import chat, embedding
from moto import mock_aws

from batchline_local import moto_patches
from batchline_local.emulator import EmulatorServer
from batchline_local.event_source import sqs_event
from batchline_local.moto_patches import LocalLambdaContext


def run_shard_by_hand(shard: dict, *, collects: int = 1) -> str:
    """Submit one shard, check its batch until it ends and collect it `collects` times; its batch id."""
    loop = wiring.shard_loop()
    job_id, shard_id = shard["job_id"], shard["shard_id"]
    batch_id = loop.submission.submit_round(job_id, shard_id, "req-1")["batch_id"]
    while loop.checking.check_batch(wiring.job_store().get_shard(job_id, shard_id), batch_id, 1)["next"] == "wait":
        pass
    for _ in range(collects):
        loop.collection.collect_batch(job_id, shard_id, batch_id)
    return batch_id


SETTINGS = load_settings(  # the same request many times over, each sent: the answer cache is off
    {
        "shard_max_requests": 2,
        "cache": False,
        "emulator": {"validating_seconds": 0, "in_progress_seconds": 0, "finalizing_seconds": 0},
    }
)
CONTEXT = LocalLambdaContext("test", 1024, "arn:aws:lambda:us-east-1:123456789012:function:test", "req-1")


@pytest.fixture
def aws(monkeypatch) -> Iterator[dict]:
    with mock_aws(), EmulatorServer(settings=SETTINGS) as emulator:
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        moto_patches.install()
        queue_url = boto3.client("sqs").create_queue(QueueName="requests")["QueueUrl"]
        env = runtime_environment_variables(SETTINGS, table_name="jobs", output_bucket="output", queue_url=queue_url)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        wiring.reset()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="input")
        s3.create_bucket(Bucket="output")
        boto3.client("dynamodb").create_table(**job_table_definition("jobs"))
        yield {"s3": s3, "queue_url": queue_url}
        wiring.reset()


def put_input(s3, lines: list[str], key: str) -> dict:
    s3.put_object(Bucket="input", Key=key, Body=("\n".join(lines) + "\n").encode())
    return {"bucket": "input", "key": key, "poll_seconds": 1}


def report_of(s3, job_id: str) -> str:
    return s3.get_object(Bucket="output", Key=f"jobs/{job_id}/report.html")["Body"].read().decode()


def progress_paths(page: str) -> list[str]:
    chart = re.search(r'<svg id="chart-progress".*?</svg>', page, flags=re.S).group(0)
    return re.findall(r'<path class="([^"]+)"', chart)


def test_a_batch_job_gets_a_report_whose_progress_is_each_collected_round(aws):
    event = put_input(aws["s3"], [chat("c0"), chat("c1"), chat("c2"), embedding("e0")], "feedback.jsonl")
    planned = plan.handler(event, CONTEXT)
    store = wiring.job_store()
    for shard in planned["shards"]:
        batch_id = run_shard_by_hand(shard, collects=2)  # a retried collect records nothing twice
        (point,) = [p for p in store.progress(planned["job_id"]) if p["shard_id"] == shard["shard_id"]]
        assert (point["round"], point["batch_id"], point["route"]) == (0, batch_id, "batch")

    outcome = finalize.handler({**event, "plan": planned}, CONTEXT)

    summary = json.loads(
        aws["s3"].get_object(Bucket="output", Key=f"jobs/{outcome['job_id']}/summary.json")["Body"].read()
    )
    assert summary["outputs"]["report"] == f"s3://output/jobs/{outcome['job_id']}/report.html"
    page = report_of(aws["s3"], outcome["job_id"])
    assert outcome["job_id"] in page
    assert progress_paths(page) == ["series route-batch"]  # recorded rounds: steps, not a guess
    assert [item["done"] for item in store.progress(outcome["job_id"])] == [2, 1, 1]
    assert page.count('class="bar-label">shard ') == len(planned["shards"])  # every batch timed


def test_a_batch_job_with_no_progress_recorded_still_gets_a_report(aws):
    # A job whose progress points are missing (a Collect that stopped before writing one).
    event = put_input(aws["s3"], [chat("c0")], "one.jsonl")
    planned = plan.handler(event, CONTEXT)
    for shard in planned["shards"]:
        run_shard_by_hand(shard)
    table = boto3.resource("dynamodb").Table("jobs")
    for point in wiring.job_store().progress(planned["job_id"]):
        table.delete_item(Key={"pk": f"JOB#{planned['job_id']}", "sk": point["sk"]})

    outcome = finalize.handler({**event, "plan": planned}, CONTEXT)

    assert progress_paths(report_of(aws["s3"], outcome["job_id"])) == ["series estimated route-batch"]


def test_a_realtime_job_gets_a_report_drawn_from_when_each_outcome_was_recorded(aws):
    event = put_input(aws["s3"], [chat("c0"), chat("c1"), chat("c2")], "realtime/rt.jsonl")  # the folder: the route
    planned = plan.handler(event, CONTEXT)
    for shard in planned["shards"]:
        enqueue.handler({"shard": shard}, CONTEXT)
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=aws["queue_url"], MaxNumberOfMessages=10, AttributeNames=["All"])
    worker.handler(sqs_event(messages["Messages"], queue_arn="arn:aws:sqs:us-east-1:1:q", region="us-east-1"), CONTEXT)
    records = [json.loads(raw) for raw in wiring.outcome_spool().records(planned["job_id"])]
    assert len(records) == 3 and all(record["answered_at"] for record in records)
    assert all(record["latency_seconds"] >= 0 for record in records)  # each call timed by the worker

    outcome = finalize.handler({**event, "plan": planned}, CONTEXT)

    page = report_of(aws["s3"], outcome["job_id"])
    assert outcome["status"] == "succeeded"
    assert progress_paths(page) == ["series route-realtime"]
    assert "realtime: 3" in page  # the legend's count of requests done
    slowest = re.search(r'<section class="panel" id="slowest-requests">.*?</section>', page, flags=re.S).group(0)
    assert sorted(re.findall(r"<code>(c\d)</code>", slowest)) == ["c0", "c1", "c2"]  # every call, slowest first
    assert "No batch was created" not in page and 'id="slowest-batches"' not in page
    results = aws["s3"].get_object(Bucket="output", Key=f"jobs/{outcome['job_id']}/results.jsonl")["Body"].read()
    for line in results.decode().splitlines():  # the timing is the report's, results.jsonl keeps its shape
        assert not {"latency_seconds", "answered_at", "unsent"} & set(json.loads(line))
