"""The hot path's pieces against moto (SQS, DynamoDB, S3) and the emulator's realtime endpoints."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from batchline import wiring
from batchline.adapters.dynamo_limits import DynamoCircuitBreaker, DynamoTokenBucket
from batchline.domain.realtime import RetryLater
from batchline.handlers import enqueue, plan, worker
from batchline.settings import load_settings, runtime_environment_variables
from batchline.topology import job_table_definition
from lines import chat
from moto import mock_aws

from batchline_local import moto_patches
from batchline_local.emulator import EmulatorServer, Faults, OpenAIEmulator
from batchline_local.event_source import settle, sqs_event
from batchline_local.moto_patches import LocalLambdaContext

CONTEXT = LocalLambdaContext("worker", 1024, "arn:aws:lambda:us-east-1:123456789012:function:worker", "req-1")
FAST = {
    "default_mode": "realtime",
    "cache": False,  # the same request many times over, each sent (test_answer_cache_on_moto.py has it on)
    "realtime": {
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "max_receive_count": 3,
        "circuit_failure_threshold": 100,  # the circuit has its own test below
    },
}


@pytest.fixture(autouse=True)
def region_and_atomic_moto(monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    moto_patches.install()  # conditional writes atomic across threads, as in DynamoDB


def make_table():
    return boto3.resource("dynamodb").create_table(**job_table_definition("jobs"))


class HotPath:
    def __init__(self, emulator: OpenAIEmulator, settings) -> None:
        self.emulator = emulator
        self.settings = settings
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        self.queue_url = ""

    def plan_and_enqueue(self, lines: list[str], key: str = "rt.jsonl") -> dict:
        self.s3.put_object(Bucket="input-files", Key=key, Body=("\n".join(lines) + "\n").encode())
        planned = plan.handler({"bucket": "input-files", "key": key, "poll_seconds": 1}, CONTEXT)
        for shard in planned["shards"]:
            enqueue.handler({"shard": shard}, CONTEXT)
        return planned

    def receive(self, count: int = 10) -> list[dict]:
        return self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=count, AttributeNames=["All"], VisibilityTimeout=0
        ).get("Messages", [])

    def deliver(self, messages: list[dict], *, settle_messages: bool = False) -> dict:
        event = sqs_event(messages, queue_arn="arn:aws:sqs:us-east-1:123456789012:q", region="us-east-1")
        response = worker.handler(event, CONTEXT)
        if settle_messages:  # as the event source mapping does
            settle(self.sqs, self.queue_url, messages, {f["itemIdentifier"] for f in response["batchItemFailures"]})
        return response

    def outcomes(self, job_id: str) -> list[dict]:
        """Every record the workers wrote for the job, in line order."""
        records = [json.loads(raw) for raw in wiring.outcome_spool().records(job_id)]
        return sorted(records, key=lambda record: record["line"])

    def work_until_done(self, job_id: str, *, timeout: float = 60) -> None:
        """Deliver and settle, as the event source does, until every valid line has an outcome."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = wiring.job_store().get_job(job_id)
            if job.realtime_done + job.realtime_unsent >= job.valid:
                return
            messages = self.receive()
            if messages:
                self.deliver(messages, settle_messages=True)
            else:
                time.sleep(0.2)  # requeued messages wait out their delay
        raise AssertionError(f"job {job_id} not done after {timeout} s")

    def billed(self) -> list[str]:
        return [entry["custom_id"] for entry in self.emulator.ledger()]


@pytest.fixture
def hot_path(monkeypatch, request) -> Iterator[HotPath]:
    overrides = getattr(request, "param", {})
    settings = load_settings({**FAST, **overrides.get("settings", {})})
    emulator = OpenAIEmulator(settings, faults=Faults.parse(overrides.get("faults", "")))
    with mock_aws(), EmulatorServer(emulator=emulator) as server:
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="requests")["QueueUrl"]
        env = runtime_environment_variables(
            settings, table_name="jobs", output_bucket="output-files", queue_url=queue_url
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        wiring.reset()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="input-files")
        s3.create_bucket(Bucket="output-files")
        make_table()
        path = HotPath(emulator, settings)
        path.queue_url = queue_url
        yield path
        wiring.reset()


def test_a_message_delivered_twice_is_billed_once_and_recorded_once(hot_path):
    planned = hot_path.plan_and_enqueue([chat("only")])
    message = hot_path.receive()[0]
    assert hot_path.deliver([message]) == {"batchItemFailures": []}
    assert hot_path.deliver([message]) == {"batchItemFailures": []}  # SQS at-least-once: the same message again
    assert hot_path.billed() == ["only"]
    assert [o["custom_id"] for o in hot_path.outcomes(planned["job_id"])] == ["only"]
    job = wiring.job_store().get_job(planned["job_id"])
    assert job.realtime_done == 1 and job.realtime_succeeded == 1
    assert job.realtime_input_tokens > 0 and job.realtime_cost_nano_usd > 0, job
    # Settled in the same transaction: what the call cost, in the job's budget counters, once.
    assert job.spent_nano == job.realtime_cost_nano_usd


@pytest.mark.parametrize("hot_path", [{"faults": "http_429=0.3"}], indirect=True)
def test_rate_limit_429s_are_waited_out_and_every_request_succeeds(hot_path, capsys):
    planned = hot_path.plan_and_enqueue([chat(f"c{i}") for i in range(12)])
    hot_path.work_until_done(planned["job_id"])
    outcomes = hot_path.outcomes(planned["job_id"])
    assert sorted(o["custom_id"] for o in outcomes) == sorted(f"c{i}" for i in range(12))
    assert all("response" in o for o in outcomes)
    stats = hot_path.emulator.stats()["models"]["gpt-4o-mini"]
    assert stats["requests_429"] > 0
    assert sorted(hot_path.billed()) == sorted(f"c{i}" for i in range(12))
    # The dashboard's 429 share: the workers count every call and every 429 the provider answered.
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]

    def total(name: str) -> int:
        return sum(
            sum(record[name]) if isinstance(record[name], list) else record[name]
            for record in records
            if name in record
        )

    answered = stats["requests_ok"] + stats["requests_429"] + stats["requests_5xx"]
    assert (total("ProviderCalls"), total("ProviderRateLimited")) == (answered, stats["requests_429"])


@pytest.mark.parametrize("hot_path", [{"faults": "insufficient_quota"}], indirect=True)
def test_insufficient_quota_stops_the_job_and_leaves_every_request_unsent_for_a_resubmission(hot_path):
    planned = hot_path.plan_and_enqueue([chat("first"), chat("second"), chat("third")])
    first, *rest = hot_path.receive()
    hot_path.deliver([first])
    job = wiring.job_store().get_job(planned["job_id"])
    assert job.halted.startswith("insufficient_quota")
    hot_path.deliver(rest)
    outcomes = {o["custom_id"]: o for o in hot_path.outcomes(planned["job_id"])}
    codes = sorted(o["code"] for o in outcomes.values())
    assert codes == ["insufficient_quota", "job_halted", "job_halted"]
    assert all(o["unsent"] for o in outcomes.values())  # not answers: a resubmission sends them
    assert hot_path.emulator.stats()["models"]["gpt-4o-mini"]["requests_429"] == 1  # one call, never retried
    assert hot_path.billed() == []
    job = wiring.job_store().get_job(planned["job_id"])
    assert job.realtime_unsent == 3 and job.realtime_done == 0


@pytest.mark.parametrize("hot_path", [{"faults": "http_5xx=1"}], indirect=True)
def test_server_errors_come_back_after_a_backoff_and_end_as_errors_on_their_last_delivery(hot_path):
    planned = hot_path.plan_and_enqueue([chat("doomed")])
    for delivery in range(1, 4):
        deadline = time.monotonic() + 10
        while not (messages := hot_path.receive()) and time.monotonic() < deadline:
            time.sleep(0.1)  # the backoff is the message's visibility
        message = messages[0]
        assert int(message["Attributes"]["ApproximateReceiveCount"]) == delivery
        response = hot_path.deliver([message])
        if delivery < 3:
            assert response["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
    outcomes = hot_path.outcomes(planned["job_id"])
    assert [(o["custom_id"], o["code"]) for o in outcomes] == [("doomed", "retries_exhausted")]
    assert hot_path.emulator.stats()["models"]["gpt-4o-mini"]["requests_5xx"] == 3  # one call a delivery


def test_a_request_too_big_for_sqs_travels_through_s3(hot_path):
    big_text = "word " * 70_000  # ~350 KB of JSON: over SQS's 256 KB
    planned = hot_path.plan_and_enqueue([chat("big", big_text, model="gpt-4.1-mini"), chat("small")])
    messages = hot_path.receive()
    bodies = [json.loads(m["Body"]) for m in messages]
    big = next(b for b in bodies if b["custom_id"] == "big")
    assert "body" not in big and big["body_key"].startswith(f"staging/{planned['job_id']}/realtime/bodies/")
    assert all(len(m["Body"]) < 262_144 for m in messages)
    assert hot_path.deliver(messages) == {"batchItemFailures": []}
    assert sorted(hot_path.billed()) == ["big", "small"]


def test_the_shared_bucket_never_grants_more_than_it_holds_however_many_workers_ask():
    with mock_aws():
        table = make_table()
        settings = load_settings(
            {"realtime": {"default_limit": {"requests_per_minute": 600, "tokens_per_minute": 60_000}}}
        ).realtime
        now = [1000.0]
        workers = [DynamoTokenBucket(table, settings, scope="key", clock=lambda: now[0]) for _ in range(8)]
        workers[0].observe("m", {"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "60000"})
        granted: list[int] = []

        def ask(bucket: DynamoTokenBucket) -> None:
            for _ in range(5):
                granted.append(bucket.acquire("m", [100] * 10, at_most=10).granted)

        threads = [threading.Thread(target=ask, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The clock stood still: one second's worth at 97% of 60,000 TPM is 970 tokens, 9 requests of 100.
        assert sum(granted) == 9
        now[0] += 0.5  # half a second refills 485 tokens: with the 70 left, five more
        assert sum(w.acquire("m", [100] * 10, at_most=10).granted for w in workers) == 5


def test_limits_announced_in_the_headers_replace_the_guess_for_every_worker():
    with mock_aws():
        table = make_table()
        settings = load_settings({}).realtime  # a guess of 200,000 TPM
        now = [1000.0]
        first, second = (DynamoTokenBucket(table, settings, scope="key", clock=lambda: now[0]) for _ in range(2))
        assert first.acquire("m", [100] * 5, at_most=5).granted == 1  # nothing learned yet: one at a time
        first.observe("m", {"x-ratelimit-limit-requests": "30000", "x-ratelimit-limit-tokens": "480000"})
        state = second.state("m")
        assert (state.limits.requests_per_minute, state.limits.tokens_per_minute) == (30_000, 480_000)
        assert second.acquire("m", [1000] * 20, at_most=20).granted == 7  # 97% of 8,000 tokens


def test_a_429_holds_back_every_worker_for_its_retry_after():
    with mock_aws():
        table = make_table()
        settings = load_settings({}).realtime
        now = [1000.0]
        first, second = (DynamoTokenBucket(table, settings, scope="key", clock=lambda: now[0]) for _ in range(2))
        first.observe("m", {"x-ratelimit-limit-requests": "30000", "x-ratelimit-limit-tokens": "480000"})
        first.pause("m", 2.0)
        held = second.acquire("m", [10], at_most=1)
        assert held.granted == 0 and held.wait_seconds == pytest.approx(2.0)
        now[0] += 2.01
        assert second.acquire("m", [10], at_most=1).granted == 1


def test_the_circuit_opens_after_a_run_of_failures_and_lets_one_probe_through_after_cooling_down():
    with mock_aws():
        table = make_table()
        settings = load_settings(
            {"realtime": {"circuit_failure_threshold": 3, "circuit_cooldown_seconds": 10}}
        ).realtime
        now = [1000.0]
        first, second = (DynamoCircuitBreaker(table, settings, clock=lambda: now[0]) for _ in range(2))
        for _ in range(3):
            first.before_call("m")
            first.failed("m")
        with pytest.raises(RetryLater):
            second.before_call("m")
        now[0] += 11
        first.before_call("m")  # the probe
        with pytest.raises(RetryLater, match="probing"):
            second.before_call("m")
        first.succeeded("m")
        second.before_call("m")  # closed again for everyone


@pytest.mark.parametrize(
    "hot_path",
    [{"settings": {"realtime": {"default_limit": {"requests_per_minute": 2, "tokens_per_minute": 1_000_000}}}}],
    indirect=True,
)
def test_waiting_for_room_in_the_rate_limit_never_uses_up_a_messages_deliveries(hot_path):
    planned = hot_path.plan_and_enqueue([chat("first"), chat("second")])
    bucket = wiring.rate_limiter()
    bucket.observe("gpt-4o-mini", {})  # a provider that announces nothing: the guess of 2 RPM holds
    messages = hot_path.receive()
    assert hot_path.deliver(messages, settle_messages=True) == {"batchItemFailures": []}
    assert hot_path.billed() == ["first"]  # a bucket of one request: the second must wait 30 s
    counts = hot_path.sqs.get_queue_attributes(QueueUrl=hot_path.queue_url, AttributeNames=["All"])["Attributes"]
    # The waiting request was sent again as a new, delayed message (its deliveries start over), and
    # the delivered one was deleted: nothing is left in flight to come back as a redelivery.
    assert counts["ApproximateNumberOfMessagesDelayed"] == "1"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert [o["custom_id"] for o in hot_path.outcomes(planned["job_id"])] == ["first"]  # no error recorded


def test_answers_are_kept_in_s3_and_the_table_holds_only_which_lines_are_answered(hot_path):
    planned = hot_path.plan_and_enqueue([chat(f"c{i}") for i in range(30)])
    hot_path.work_until_done(planned["job_id"])
    items = boto3.resource("dynamodb").Table("jobs").scan()["Items"]
    answered = [item for item in items if item["sk"].startswith("ANSWERED#")]
    assert len(answered) == 1 and len(answered[0]["lines"]) == 30
    assert not any("response" in json.dumps(item, default=str) for item in items)  # no answer in the table
    assert len(hot_path.outcomes(planned["job_id"])) == 30
