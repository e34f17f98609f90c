"""The hot path's pieces against moto (SQS, DynamoDB, S3) and the emulator's realtime endpoints."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from batchline.adapters.dynamo_limits import DynamoCircuitBreaker, DynamoRateLimiter
from batchline.domain.realtime import RetryLater
from batchline.handlers import dependencies, enqueue, plan, worker
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
    "realtime": {
        "max_attempts": 3,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "max_receive_count": 3,
        "rate_window_seconds": 2,
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
        return [json.loads(record) for _, _, record, _ in dependencies.job_store().outcomes(job_id)]

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
        dependencies.reset()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="input-files")
        s3.create_bucket(Bucket="output-files")
        make_table()
        path = HotPath(emulator, settings)
        path.queue_url = queue_url
        yield path
        dependencies.reset()


def test_a_message_delivered_twice_is_billed_once_and_recorded_once(hot_path):
    planned = hot_path.plan_and_enqueue([chat("only")])
    message = hot_path.receive()[0]
    assert hot_path.deliver([message]) == {"batchItemFailures": []}
    assert hot_path.deliver([message]) == {"batchItemFailures": []}  # SQS at-least-once: the same message again
    assert hot_path.billed() == ["only"]
    assert [o["custom_id"] for o in hot_path.outcomes(planned["job_id"])] == ["only"]
    job = dependencies.job_store().get_job(planned["job_id"])
    assert job["realtime_done"] == 1 and job["realtime_succeeded"] == 1
    assert job["realtime_input_tokens"] > 0 and job["realtime_cost_nano_usd"] > 0, job
    # Settled in the same transaction: what the call cost, in the job's budget counters, once.
    assert job["spent_nano"] == job["realtime_cost_nano_usd"]


@pytest.mark.parametrize("hot_path", [{"faults": "http_429=0.3"}], indirect=True)
def test_rate_limit_429s_are_waited_out_and_every_request_succeeds(hot_path, capsys):
    planned = hot_path.plan_and_enqueue([chat(f"c{i}") for i in range(12)])
    while messages := hot_path.receive():
        # A request that met 429 on every attempt comes back for another delivery.
        hot_path.deliver(messages, settle_messages=True)
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
def test_insufficient_quota_stops_the_job_without_retrying_anything(hot_path):
    planned = hot_path.plan_and_enqueue([chat("first"), chat("second"), chat("third")])
    first, *rest = hot_path.receive()
    hot_path.deliver([first])
    job = dependencies.job_store().get_job(planned["job_id"])
    assert job["halted"].startswith("insufficient_quota")
    hot_path.deliver(rest)
    outcomes = {o["custom_id"]: o for o in hot_path.outcomes(planned["job_id"])}
    codes = sorted(o["code"] for o in outcomes.values())
    assert codes == ["insufficient_quota", "job_halted", "job_halted"]
    assert hot_path.emulator.stats()["models"]["gpt-4o-mini"]["requests_429"] == 1  # one call, never retried
    assert hot_path.billed() == []


@pytest.mark.parametrize("hot_path", [{"faults": "http_5xx=1"}], indirect=True)
def test_server_errors_are_retried_then_handed_back_and_finally_recorded_as_errors(hot_path):
    planned = hot_path.plan_and_enqueue([chat("doomed")])
    for delivery in range(1, 4):
        message = hot_path.receive()[0]
        assert int(message["Attributes"]["ApproximateReceiveCount"]) == delivery
        response = hot_path.deliver([message])
        if delivery < 3:
            assert response["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
    outcomes = hot_path.outcomes(planned["job_id"])
    assert [(o["custom_id"], o["code"]) for o in outcomes] == [("doomed", "retries_exhausted")]
    assert hot_path.emulator.stats()["models"]["gpt-4o-mini"]["requests_5xx"] == 9  # 3 attempts x 3 deliveries


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


def test_the_shared_rate_limiter_never_grants_more_than_a_window_holds():
    with mock_aws():
        table = make_table()
        settings = load_settings(
            {
                "realtime": {
                    "default_limit": {"requests_per_minute": 1000, "tokens_per_minute": 1000},
                    "rate_window_seconds": 3600,
                    "max_wait_for_capacity_seconds": 0.01,
                }
            }
        ).realtime
        granted: list[int] = []

        def worker_thread() -> None:
            limiter = DynamoRateLimiter(table, settings, sleep=lambda s: None)
            for _ in range(20):
                try:
                    limiter.acquire("gpt-4o-mini", 30)
                    granted.append(30)
                except RetryLater:
                    pass

        threads = [threading.Thread(target=worker_thread) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(granted) == 990  # 33 requests of 30 tokens fit in 1,000; the 34th never does
        usage = DynamoRateLimiter(table, settings).window_usage("gpt-4o-mini")
        assert len(usage) == 1 and usage[0]["tokens"] == 990


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


def test_headers_arriving_after_the_window_turned_do_not_overwrite_the_new_window():
    with mock_aws():
        table = make_table()
        settings = load_settings(
            {
                "realtime": {
                    "default_limit": {"requests_per_minute": 1000, "tokens_per_minute": 5000},
                    "rate_window_seconds": 2,
                }
            }
        ).realtime
        now = [1001.5]
        mine, other = (DynamoRateLimiter(table, settings, clock=lambda: now[0], sleep=lambda s: None) for _ in range(2))
        mine.acquire("m", 121)
        now[0] = 1002.001
        other.acquire("m", 121)
        now[0] = 1002.012  # my response arrives in the next window, saying the old one was nearly full
        mine.observe("m", {"x-ratelimit-limit-tokens": "5000", "x-ratelimit-remaining-tokens": "100"})
        assert [w["tokens"] for w in mine.window_usage("m")] == [121, 121]


def test_nothing_is_granted_in_the_last_sliver_of_a_window():
    with mock_aws():
        table = make_table()
        settings = load_settings({"realtime": {"rate_window_seconds": 10}}).realtime
        now = [1009.95]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        DynamoRateLimiter(table, settings, clock=lambda: now[0], sleep=sleep).acquire("m", 50)
        assert slept and [w["window"] for w in DynamoRateLimiter(table, settings).window_usage("m")] == [101]


LONG_WINDOW_SECONDS = 3600


@pytest.mark.parametrize(
    "hot_path",
    [
        {
            "settings": {
                "realtime": {
                    "default_limit": {"requests_per_minute": 1, "tokens_per_minute": 10_000},
                    # Long enough that both requests always meet in one window, however slow the machine.
                    "rate_window_seconds": LONG_WINDOW_SECONDS,
                    "max_wait_for_capacity_seconds": 0.05,
                    "max_receive_count": 1,
                }
            }
        }
    ],
    indirect=True,
)
def test_waiting_for_room_in_the_rate_limit_never_uses_up_a_messages_deliveries(hot_path):
    # Windows are aligned to the clock: start well inside one, away from the sliver at its end
    # where nothing is granted (rarely, this waits for the next window).
    left = LONG_WINDOW_SECONDS - time.time() % LONG_WINDOW_SECONDS
    if left < 0.02 * LONG_WINDOW_SECONDS + 10:
        time.sleep(left + 1)
    planned = hot_path.plan_and_enqueue([chat("first"), chat("second")])
    messages = hot_path.receive()
    assert hot_path.deliver(messages, settle_messages=True) == {"batchItemFailures": []}
    assert hot_path.billed() == ["first"]  # one request per window: the second had to wait
    counts = hot_path.sqs.get_queue_attributes(QueueUrl=hot_path.queue_url, AttributeNames=["All"])["Attributes"]
    # The waiting request was sent again as a new, delayed message (its deliveries start over), and
    # the delivered one was deleted: nothing is left in flight to come back as a redelivery.
    assert counts["ApproximateNumberOfMessagesDelayed"] == "1"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert [o["custom_id"] for o in hot_path.outcomes(planned["job_id"])] == ["first"]  # no error recorded


def test_an_outcome_too_large_for_an_item_is_found_through_its_key():
    with mock_aws():
        make_table()
        store = dependencies.JobStore("jobs")
        store.put_job("j", status="running")
        assert store.record_outcome(
            "j", 7, record="", succeeded=True, tally={}, record_key="staging/j/realtime/outcomes/7.json"
        )
        assert store.record_outcome("j", 3, record='{"line": 3}', succeeded=False, tally={})
        assert list(store.outcomes("j")) == [
            (3, False, '{"line": 3}', None),
            (7, True, "", "staging/j/realtime/outcomes/7.json"),
        ]
