"""`batchline cancel --now` stops the executions of that job only: the same key may hold another file by now."""

from __future__ import annotations

import json

from batchline.domain.records import JobRecord

from batchline_cli.jobs_client import JobsClient
from batchline_cli.stack_target import StackTarget


class FakeStepFunctions:
    """Running executions by ARN: (execution input, history events)."""

    def __init__(self, executions: dict[str, tuple[dict, list[dict]]]) -> None:
        self.executions = executions
        self.stopped: list[str] = []

    def get_paginator(self, name: str) -> FakeStepFunctions:
        assert name == "list_executions"
        return self

    def paginate(self, **kwargs) -> list[dict]:
        assert kwargs["statusFilter"] == "RUNNING"
        return [{"executions": [{"executionArn": arn} for arn in self.executions]}]

    def describe_execution(self, executionArn: str) -> dict:  # noqa: N803 (boto3's names)
        return {"input": json.dumps(self.executions[executionArn][0])}

    def get_execution_history(self, executionArn: str, maxResults: int) -> dict:  # noqa: N803
        return {"events": self.executions[executionArn][1]}

    def stop_execution(self, executionArn: str, error: str, cause: str) -> None:  # noqa: N803
        self.stopped.append(executionArn)


class FakeStore:
    def __init__(self) -> None:
        self.updates: list[tuple[str, dict]] = []

    def update_job(self, job_id: str, **fields) -> None:
        self.updates.append((job_id, fields))


def planned(job_id: str) -> list[dict]:
    output = {"bucket": "in", "key": "f.jsonl", "plan": {"job_id": job_id}}
    return [{"type": "TaskStateExited", "stateExitedEventDetails": {"name": "Plan", "output": json.dumps(output)}}]


def test_only_the_executions_of_the_job_are_stopped_and_the_job_says_so():
    target = StackTarget(
        label="test", input_bucket="in", output_bucket="out", table="jobs", state_machine_arn="arn:sm",
        output_prefix="jobs", region="us-east-1", endpoint_url="http://127.0.0.1:9",
    )  # fmt: skip
    client = JobsClient(target)
    client.store = FakeStore()  # type: ignore[assignment]
    start = {"bucket": "in", "key": "f.jsonl"}
    sfn = FakeStepFunctions(
        {
            "this-job": (start, planned("f-1111")),
            "not-planned-yet": (start, []),  # the key is all there is to go by
            "same-key-other-content": (start, planned("f-2222")),
            "other-key": ({"bucket": "in", "key": "g.jsonl"}, []),
        }
    )

    stopped = client.stop_executions(JobRecord(job_id="f-1111", bucket="in", key="f.jsonl"), sfn=sfn)

    assert stopped == sfn.stopped == ["this-job", "not-planned-yet"]
    assert client.store.updates == [("f-1111", {"execution_stopped": "not-planned-yet"})]
