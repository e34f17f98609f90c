"""Each step against moto (S3, DynamoDB) and the emulator: the handlers and the per-shard work of the poll loop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import boto3
import openai
import pytest
from batch_route import batch_route_stack
from batchline import wiring
from batchline.domain.errors import InputNotFoundError
from batchline.domain.layout import JobLayout
from batchline.handlers import check, finalize, plan, submit
from batchline.settings import SettingsError, load_settings
from batchline.workflow.submission import batch_metadata, ticket_for
from lines import BAD_LINES, chat, embedding

from batchline_local import moto_patches
from batchline_local.moto_patches import LocalLambdaContext


def submit_round(shard: dict, attempt: str) -> dict:
    """One Submit step of the poll loop, with the ports the functions are wired with."""
    return wiring.shard_loop().submission.submit_round(shard["job_id"], shard["shard_id"], attempt)


# These tests send one request many times over on purpose: the answer cache (which would send it once) is off;
# tests/integration/test_answer_cache_on_moto.py has it on.
SETTINGS = load_settings(
    {
        "shard_max_requests": 4,
        "cache": False,
        "emulator": {"validating_seconds": 0, "in_progress_seconds": 0, "finalizing_seconds": 0},
    }
)
CONTEXT = LocalLambdaContext("test", 1024, "arn:aws:lambda:us-east-1:123456789012:function:test", "req-1")


@pytest.fixture
def aws(monkeypatch) -> Iterator[dict]:
    with batch_route_stack(monkeypatch, SETTINGS) as stack:
        yield stack


def put_input(s3, lines: list[str], key: str = "feedback.jsonl") -> dict:
    s3.put_object(Bucket="input-files", Key=key, Body=("\n".join(lines) + "\n").encode())
    return {"bucket": "input-files", "key": key, "poll_seconds": 1}


def test_plan_writes_shards_manifests_and_invalid_lines_and_records_the_job(aws):
    event = put_input(aws["s3"], [chat(f"c{i}") for i in range(6)] + [BAD_LINES[0][0]] + [embedding("e0")])
    planned = plan.handler(event, CONTEXT)

    assert planned["shard_count"] == 3 and planned["invalid"] == 1 and planned["valid"] == 7
    job_id = planned["job_id"]
    first = planned["shards"][0]
    body = (
        aws["s3"]
        .get_object(Bucket="output-files", Key=f"staging/{job_id}/shards/{first['shard_id']}/requests.jsonl")["Body"]
        .read()
    )
    assert [json.loads(line)["custom_id"] for line in body.splitlines()] == ["c0", "c1", "c2", "c3"]
    invalid = (
        aws["s3"].get_object(Bucket="output-files", Key=f"staging/{job_id}/invalid.jsonl")["Body"].read().splitlines()
    )
    assert json.loads(invalid[0]) | {"message": None} == {
        "custom_id": None,
        "line": 7,
        "stage": "validation",
        "code": "invalid_json",
        "message": None,
        "status_code": None,
    }
    job = wiring.job_store().get_job(job_id)
    assert (job.status, job.input_lines, job.shard_count) == ("running", 8, 3)
    assert job.estimated_cost_usd > 0


def test_submit_twice_creates_one_batch(aws):
    planned = plan.handler(put_input(aws["s3"], [chat("c0"), chat("c1")]), CONTEXT)
    shard = planned["shards"][0]
    first = submit_round(shard, "req-1")
    again = submit_round(shard, "req-1")
    assert again["batch_id"] == first["batch_id"]
    batches = aws["emulator"].emulator.list_batches()["data"]
    assert len(batches) == 1
    assert batches[0]["metadata"] == {
        "batchline_job_id": planned["job_id"],
        "batchline_shard_id": shard["shard_id"],
        "batchline_round": "0",
    }


def test_a_batch_created_by_an_attempt_that_died_before_recording_it_is_adopted_not_paid_twice(aws):
    planned = plan.handler(put_input(aws["s3"], [chat("c0"), chat("c1")]), CONTEXT)
    shard = planned["shards"][0]
    metadata = batch_metadata(planned["job_id"], shard["shard_id"], 0)
    client = openai.OpenAI(base_url=aws["emulator"].base_url, api_key="test")
    upload = client.files.create(file=("x.jsonl", (chat("c0") + "\n").encode()), purpose="batch")
    orphan = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
    )
    answer = submit_round(shard, "req-1")
    assert (answer["action"], answer["batch_id"]) == ("wait_batch", orphan.id)
    assert len(aws["emulator"].emulator.list_batches()["data"]) == 1


def test_two_executions_submitting_the_same_shard_at_once_create_one_batch(aws):
    moto_patches.install()  # DynamoDB's conditional writes are atomic; in-process moto's only with it
    planned = plan.handler(put_input(aws["s3"], [chat(f"c{i}") for i in range(3)]), CONTEXT)
    shard = planned["shards"][0]
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(submit_round(shard, "req-1"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches = aws["emulator"].emulator.list_batches()["data"]
    assert len(batches) == 1
    assert sorted(a["action"] for a in answers).count("wait_batch") >= 1
    # The others wait and, next time round, find the one batch.
    again = submit_round(shard, "req-1")
    assert (again["action"], again["batch_id"]) == ("wait_batch", batches[0]["id"])


def run_poll_loop(job_id: str, *, max_polls: int = 200) -> list[dict]:
    """SubmitShards, then CheckShards until the job is finished, as the state machine chains them."""
    answers = [submit.handler({"job_id": job_id, "poll_seconds": 1}, CONTEXT)]
    while not answers[-1]["finished"]:
        assert len(answers) < max_polls, "the job never finished"
        event = {"job_id": job_id, "poll_seconds": 1, "polls": answers[-1]["polls"]}
        answers.append(check.handler(event, CONTEXT))
    return answers


def test_the_poll_loop_collects_and_finalize_joins_results_back_to_input_lines(aws, capsys):
    lines = [chat("c0"), embedding("e0"), chat("c1"), BAD_LINES[1][0], chat("c2")]
    event = put_input(aws["s3"], lines)
    planned = plan.handler(event, CONTEXT)
    answers = run_poll_loop(planned["job_id"])
    assert answers[-1]["shards"] == {"ended": 2, "running": 0, "waiting": 0}
    assert [a["polls"] for a in answers] == list(range(len(answers)))
    shards = wiring.job_store().list_shards(planned["job_id"])
    assert {s.status for s in shards} == {"collected"}
    outcome = finalize.handler({**event, "plan": planned}, CONTEXT)

    assert outcome["status"] == "completed_with_errors"
    prefix = f"jobs/{planned['job_id']}"
    results = [
        json.loads(x)
        for x in aws["s3"].get_object(Bucket="output-files", Key=f"{prefix}/results.jsonl")["Body"].read().splitlines()
    ]
    errors = [
        json.loads(x)
        for x in aws["s3"].get_object(Bucket="output-files", Key=f"{prefix}/errors.jsonl")["Body"].read().splitlines()
    ]
    summary = json.loads(aws["s3"].get_object(Bucket="output-files", Key=f"{prefix}/summary.json")["Body"].read())
    assert [(r["line"], r["custom_id"]) for r in results] == [(1, "c0"), (2, "e0"), (3, "c1"), (5, "c2")]
    assert [(e["line"], e["code"]) for e in errors] == [(4, "not_an_object")]
    ledger = aws["emulator"].emulator.ledger()
    assert summary["input_tokens"] == sum(entry["prompt_tokens"] for entry in ledger)
    assert (summary["succeeded"], summary["invalid"], summary["failed"], summary["shards"]) == (4, 1, 0, 2)
    # The dashboard's figures: one CloudWatch embedded-metric record per job, by route.
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    emf = [record for record in records if "route" in record and "RequestsSucceeded" in record]
    assert len(emf) == 1 and emf[0]["route"] == "batch"
    monthly = [record for record in records if "MonthlySpendUSD" in record]
    assert monthly and monthly[-1]["MonthlySpendUSD"] == [summary["budget"]["monthly_spent_usd"]]
    assert summary["budget"]["monthly_spent_usd"] == pytest.approx(summary["cost_usd"], abs=1e-6)
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Batchline"
    assert (emf[0]["JobsCompletedWithErrors"], emf[0]["RequestsSucceeded"], emf[0]["InvalidLines"]) == (
        [1.0],
        [4.0],
        [1.0],
    )
    assert emf[0]["InputTokens"] == [summary["input_tokens"]]


def test_a_missing_input_fails_plan_clearly_and_finalize_still_writes_a_summary(aws):
    event = {"bucket": "input-files", "key": "gone.jsonl", "poll_seconds": 1}
    with pytest.raises(InputNotFoundError, match="s3://input-files/gone.jsonl does not exist"):
        plan.handler(event, CONTEXT)
    failure = {
        "Error": "InputNotFoundError",
        "Cause": json.dumps({"errorMessage": "s3://input-files/gone.jsonl does not exist"}),
    }
    outcome = finalize.handler({**event, "error": failure}, CONTEXT)
    assert outcome["status"] == "failed"
    assert outcome["message"] == "InputNotFoundError: s3://input-files/gone.jsonl does not exist"
    summary = json.loads(
        aws["s3"].get_object(Bucket="output-files", Key=f"jobs/{outcome['job_id']}/summary.json")["Body"].read()
    )
    assert summary["status"] == "failed" and summary["input_lines"] == 0


def test_deployed_functions_read_the_openai_key_from_secrets_manager(aws, monkeypatch):
    secret_arn = boto3.client("secretsmanager").create_secret(Name="openai", SecretString="sk-from-secret")["ARN"]
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ARN", secret_arn)
    wiring.reset()
    planned = plan.handler(put_input(aws["s3"], [chat("c0")]), CONTEXT)
    submitted = submit_round(planned["shards"][0], "req-1")
    assert submitted["batch_id"].startswith("batch_")
    assert wiring.openai_batches()._client.api_key == "sk-from-secret"


def test_a_function_with_no_key_anywhere_says_which_variables_to_set(aws, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    wiring.reset()
    planned = plan.handler(put_input(aws["s3"], [chat("c0")]), CONTEXT)  # Plan needs no key
    with pytest.raises(SettingsError, match="OPENAI_API_KEY or OPENAI_API_KEY_SECRET_ARN"):
        submit_round(planned["shards"][0], "req-1")


def test_a_cancelled_job_sends_no_new_batch_and_gives_back_what_its_round_held(aws):
    planned = plan.handler(put_input(aws["s3"], [chat("c0"), chat("c1")]), CONTEXT)
    job_id, shard = planned["job_id"], planned["shards"][0]
    store = wiring.job_store()
    # The round holds a budget reservation and queue room, as after a batch refused for the token limit.
    ticket = ticket_for(job_id, shard["shard_id"], 0)
    month = store.get_job(job_id).budget_month
    assert wiring.budgets().take(job_id, month, 1000, piece=ticket)
    assert wiring.admission_ledger().admit("gpt-4o-mini", ticket, 10, 1_000_000)

    assert store.request_cancel(job_id, reason="cancelled by the user")
    answer = submit_round(shard, "req-1")

    assert answer == {"action": "done", "stopped": False}
    record = store.get_shard(job_id, shard["shard_id"])
    assert record.status == "cancelled" and record.submit_claim is None
    assert aws["emulator"].emulator.list_batches()["data"] == []  # nothing sent
    assert not wiring.budgets().settle(job_id, month, ticket, 0)  # settled already, at zero
    assert not wiring.admission_ledger().release("gpt-4o-mini", ticket)  # room given back already
    assert store.get_job(job_id).halted == "cancelled by the user"  # realtime workers stop too
    assert not store.request_cancel("no-such-job-0000", reason="cancelled by the user")


def test_uploading_a_cancelled_file_again_sends_what_the_cancel_kept_back(aws):
    event = put_input(aws["s3"], [chat("c0"), chat("c1")])
    planned = plan.handler(event, CONTEXT)
    shard = planned["shards"][0]
    store = wiring.job_store()
    assert store.request_cancel(planned["job_id"], reason="test")
    assert submit_round(shard, "req-1")["action"] == "done"
    assert store.get_shard(planned["job_id"], shard["shard_id"]).status == "cancelled"
    assert aws["emulator"].emulator.list_batches()["data"] == []

    resumed = plan.handler(event, CONTEXT)  # the same file again
    assert resumed["resumed"] and [s["shard_id"] for s in resumed["shards"]] == [shard["shard_id"]]
    assert store.get_job(planned["job_id"]).cancel_requested is None
    assert submit_round(shard, "req-1")["action"] == "wait_batch"
    assert len(aws["emulator"].emulator.list_batches()["data"]) == 1


def test_a_shard_that_fails_fails_alone_with_its_reason_and_the_others_finish(aws):
    planned = plan.handler(put_input(aws["s3"], [chat("c0"), embedding("e0")]), CONTEXT)
    job_id = planned["job_id"]
    broken = planned["shards"][0]["shard_id"]
    aws["s3"].delete_object(Bucket="output-files", Key=f"staging/{job_id}/shards/{broken}/requests.jsonl")

    room_before = wiring.admission_ledger().enqueued_tokens("gpt-4o-mini")

    answers = run_poll_loop(job_id)

    shards = {s.shard_id: s for s in wiring.job_store().list_shards(job_id)}
    assert shards[broken].status == "failed" and "Not Found" in shards[broken].failure
    # It failed after taking its room in the enqueued-token ledger (its upload): the room came back.
    assert wiring.admission_ledger().enqueued_tokens("gpt-4o-mini") == room_before
    ticket = ticket_for(job_id, broken, 0)
    assert not wiring.admission_ledger().release("gpt-4o-mini", ticket), "given back already"
    month = wiring.job_store().get_job(job_id).budget_month
    assert not wiring.budgets().settle(job_id, month, ticket, 0), "its budget reservation too"
    assert [s.status for k, s in shards.items() if k != broken] == ["collected"]
    assert answers[-1]["finished"] and len(aws["emulator"].emulator.list_batches()["data"]) == 1


def test_no_more_batches_run_at_once_than_settings_allow(aws, monkeypatch):
    limited = load_settings({**SETTINGS.model_dump(), "map_max_concurrency": 1})
    monkeypatch.setenv("BATCHLINE_SETTINGS", limited.model_dump_json())
    wiring.reset()
    planned = plan.handler(put_input(aws["s3"], [chat(f"c{i}") for i in range(12)]), CONTEXT)
    assert planned["shard_count"] == 3

    first = submit.handler({"job_id": planned["job_id"], "poll_seconds": 1}, CONTEXT)

    assert first["shards"] == {"ended": 0, "running": 1, "waiting": 2}
    assert len(aws["emulator"].emulator.list_batches()["data"]) == 1
    run_poll_loop(planned["job_id"])
    batches = aws["emulator"].emulator.list_batches()["data"]
    assert len(batches) == 3 and {b["status"] for b in batches} == {"completed"}


def test_after_max_polls_the_loop_hands_the_job_over_and_the_new_plan_only_reads_it_back(aws, monkeypatch):
    # One batch at a time over three shards: two polls are not enough to finish.
    short = load_settings({**SETTINGS.model_dump(), "max_polls_per_execution": 2, "map_max_concurrency": 1})
    monkeypatch.setenv("BATCHLINE_SETTINGS", short.model_dump_json())
    wiring.reset()
    event = put_input(aws["s3"], [chat(f"c{i}") for i in range(12)])
    planned = plan.handler(event, CONTEXT)
    job_id = planned["job_id"]
    store = wiring.job_store()

    first = check.handler({"job_id": job_id, "poll_seconds": 1, "polls": 0}, CONTEXT)
    second = check.handler({"job_id": job_id, "poll_seconds": 1, "polls": first["polls"]}, CONTEXT)

    assert (first["hand_over"], second["hand_over"], second["polls"]) == (False, True, 2)
    assert store.request_cancel(job_id, reason="cancelled by the user")  # a cancel on its way survives
    taken = plan.handler({**event, "job_id": job_id, "handover_from": "arn:previous"}, CONTEXT)
    assert (taken["job_id"], taken["route"], taken["resumed"]) == (job_id, "batch", True)
    job = store.get_job(job_id)
    assert job.cancel_requested and job.handovers == 1 and job.resumes == 0


def test_a_batch_the_user_cancelled_between_two_reads_of_the_check_is_collected_not_failed(aws, monkeypatch):
    # In a slow batch, one request runs and is billed; then `batchline cancel` cancels the batch in
    # the moment between the check reading it (in progress) and the check cancelling it itself.
    slow = load_settings({**SETTINGS.model_dump(), "emulator": {"in_progress_seconds": 4, "finalizing_seconds": 0}})
    aws["emulator"].emulator.settings = slow  # the pace of batches created from now on
    planned = plan.handler(put_input(aws["s3"], [chat(f"c{i}") for i in range(4)]), CONTEXT)
    job_id, shard = planned["job_id"], planned["shards"][0]
    assert submit_round(shard, "req-1")["action"] == "wait_batch"
    store = wiring.job_store()
    gateway = wiring.openai_batches()
    real_retrieve = gateway.retrieve_batch
    reads = []

    def retrieve_then_the_user_cancels(batch: str) -> dict:
        seen = real_retrieve(batch)
        reads.append(seen["status"])
        if len(reads) == 1:
            store.request_cancel(job_id, reason="cancelled by the user")
            aws["emulator"].emulator.cancel_batch(batch)
        return seen

    monkeypatch.setattr(gateway, "retrieve_batch", retrieve_then_the_user_cancels)
    time.sleep(1.2)  # the first of the four requests has run
    answers = run_poll_loop(job_id)

    record = store.get_shard(job_id, shard["shard_id"])
    assert reads[0] == "in_progress" and record.failure is None, "the check's own cancel, refused, failed nothing"
    assert record.status == "cancelled" and answers[-1]["finished"]
    billed = [row["custom_id"] for row in aws["emulator"].emulator.ledger()]
    finalize.handler({"plan": {"job_id": job_id}}, CONTEXT)
    key = JobLayout(job_id, SETTINGS.output_prefix).results
    results = aws["s3"].get_object(Bucket="output-files", Key=key)["Body"].read()
    answered = [json.loads(line)["custom_id"] for line in results.splitlines()]
    assert billed and answered == billed, "what the batch ran before the cancel is kept, and nothing else"
