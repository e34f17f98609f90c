"""Faults on request: each one as batchline would meet it through the SDK, and nothing billed that was not answered."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from batchline.settings import load_settings

from batchline_local.emulator import EmulatorServer, OpenAIEmulator
from batchline_local.emulator.faults import FAULTS_ENV, Faults, hits

from .helpers import ManualClock, chat_line, read_jsonl, sdk_client, start_batch, upload

PACE = {"validating_seconds": 1, "in_progress_seconds": 10, "finalizing_seconds": 1}
QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


def _faulty(start_server, faults: str, **emulator: Any):
    """An emulator on a manual clock with ``faults`` in its settings, and an SDK client for it."""
    clock = ManualClock()
    settings = load_settings({"emulator": {**PACE, **emulator, "faults": faults}})
    server = start_server(OpenAIEmulator(settings, clock=clock))
    return clock, server, sdk_client(server)


def _lines(count: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [chat_line(f"{prefix}{i}", f"prompt {i}", max_tokens=10) for i in range(count)]


def _hi(client: openai.OpenAI):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


# ----- the spec ---------------------------------------------------------------------------------


def test_a_spec_names_each_fault_with_its_value() -> None:
    faults = Faults.parse(
        " token_limit=2, expire=0.5,request_error=0.1 ,http_429=0.2,http_5xx=0.3,stuck=1,insufficient_quota,"
        "schema_invalid=0.25"
    )

    assert faults == Faults(
        token_limit=2,
        expire=0.5,
        request_error=0.1,
        http_429=0.2,
        http_5xx=0.3,
        stuck=1,
        insufficient_quota=True,
        schema_invalid=0.25,
    )
    assert Faults.parse(faults.describe()) == faults
    assert Faults.parse("") == Faults()


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("tokenlimit=2", "tokenlimit=2"),
        ("expire=1.5", "expire=1.5"),
        ("http_429=-0.1", "http_429=-0.1"),
        ("token_limit=two", "token_limit=two"),
        ("stuck=-1", "stuck=-1"),
        ("stuck=1.5", "stuck=1.5"),
        ("request_error", "request_error"),
        ("insufficient_quota=1", "insufficient_quota=1"),
        ("stuck=1,stuck=2", "stuck=2"),
    ],
)
def test_a_wrong_spec_is_refused_at_construction_naming_the_item(spec: str, named: str) -> None:
    with pytest.raises(ValueError, match=f"settings.emulator.faults: .*'{named}'"):
        OpenAIEmulator(load_settings({"emulator": {"faults": spec}}))
    with pytest.raises(ValueError, match=f"'{named}'"):
        EmulatorServer(settings=load_settings({"emulator": {"faults": spec}}))


def test_the_environment_variable_wins_over_settings(monkeypatch) -> None:
    settings = load_settings({"emulator": {"faults": "token_limit=3"}})

    monkeypatch.setenv(FAULTS_ENV, "stuck=1, http_5xx=0.5")
    assert OpenAIEmulator.from_settings(settings).faults == Faults(stuck=1, http_5xx=0.5)
    monkeypatch.setenv(FAULTS_ENV, "")
    assert OpenAIEmulator.from_settings(settings).faults == Faults(), "set but empty: no faults"
    monkeypatch.delenv(FAULTS_ENV)
    assert OpenAIEmulator.from_settings(settings).faults == Faults(token_limit=3)
    monkeypatch.setenv(FAULTS_ENV, "explode")
    with pytest.raises(ValueError, match=f"{FAULTS_ENV}: unknown emulator fault 'explode'"):
        OpenAIEmulator.from_settings(settings)


def test_a_server_built_from_settings_takes_its_faults_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "insufficient_quota")
    with EmulatorServer(settings=load_settings({})) as server:
        with pytest.raises(openai.RateLimitError) as refused:
            _hi(sdk_client(server))

    assert refused.value.code == "insufficient_quota"


# ----- batch faults -----------------------------------------------------------------------------


def test_token_limit_fails_the_first_batches_at_validation_then_lets_them_through(start_server) -> None:
    clock, server, client = _faulty(start_server, "token_limit=2")
    first, second, third = (start_batch(client, _lines(2, prefix)).id for prefix in "abc")

    clock.advance(100)
    failed = [client.batches.retrieve(batch_id) for batch_id in (first, second)]
    done = client.batches.retrieve(third)

    for batch in failed:
        assert batch.status == "failed"
        assert batch.failed_at == batch.created_at + 1
        assert [e.model_dump() for e in batch.errors.data] == [
            {
                "code": "token_limit_exceeded",
                "message": "Enqueued token limit reached for gpt-4o-mini in organization org-emulator. "
                "Limit: 90,000 enqueued tokens. Please try again once some in_progress batches have been completed.",
                "param": None,
                "line": None,
            }
        ]
        assert batch.output_file_id is None and batch.request_counts.total == 0
    assert done.status == "completed"
    assert sorted(entry["custom_id"] for entry in server.emulator.ledger()) == ["c0", "c1"]


def test_expire_keeps_the_finished_share_and_lists_the_rest_as_batch_expired(start_server) -> None:
    clock, server, client = _faulty(start_server, "expire=0.5")
    batch_id = start_batch(client, _lines(4)).id

    clock.advance(1 + 4)  # 40 % of the in_progress span: not yet half done
    assert client.batches.retrieve(batch_id).status == "in_progress"
    clock.advance(2)
    batch = client.batches.retrieve(batch_id)

    assert batch.status == "expired"
    assert batch.expired_at == batch.created_at + 1 + 5
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 2, 0)
    done = read_jsonl(client, batch.output_file_id)
    not_run = read_jsonl(client, batch.error_file_id)
    assert [r["response"]["status_code"] for r in done] == [200, 200]
    assert [(r["response"], r["error"]) for r in not_run] == [
        (
            None,
            {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window expired.",
            },
        )
    ] * 2
    assert sorted(r["custom_id"] for r in done + not_run) == ["r0", "r1", "r2", "r3"]
    assert sorted(e["custom_id"] for e in server.emulator.ledger()) == sorted(r["custom_id"] for r in done)


def test_expire_still_applies_when_batches_finish_instantly(start_server) -> None:
    _, server, client = _faulty(start_server, "expire=0.25", validating_seconds=0, in_progress_seconds=0)

    batch = client.batches.retrieve(start_batch(client, _lines(8)).id)

    assert batch.status == "expired"
    assert batch.request_counts.completed == 2
    assert len(server.emulator.ledger()) == 2


def test_request_error_fails_a_share_of_requests_with_500_and_a_resubmission_can_succeed(start_server) -> None:
    clock, server, client = _faulty(start_server, "request_error=0.5")
    pending = {line["custom_id"]: line for line in _lines(40)}
    first_round = None

    for _ in range(40):
        batch = start_batch(client, list(pending.values()))
        clock.advance(100)
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed"
        failed = read_jsonl(client, batch.error_file_id) if batch.error_file_id else []
        if first_round is None:
            first_round = (batch, failed)
        succeeded = read_jsonl(client, batch.output_file_id) if batch.output_file_id else []
        assert batch.request_counts.completed == len(succeeded) and batch.request_counts.failed == len(failed)
        for line in succeeded:
            del pending[line["custom_id"]]  # the failed ones stay, to be resubmitted in a new batch
        if not pending:
            break

    assert not pending, "every request eventually succeeds in some new batch"
    batch, failed = first_round
    assert 0 < len(failed) < 40
    assert all(
        line["error"] is None
        and line["response"]["status_code"] == 500
        and line["response"]["request_id"]
        and line["response"]["body"]
        == {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        for line in failed
    )
    assert batch.usage.input_tokens == sum(
        entry["prompt_tokens"] for entry in server.emulator.ledger() if entry["batch_id"] == batch.id
    )
    billed = [entry["custom_id"] for entry in server.emulator.ledger()]
    assert sorted(billed) == sorted(f"r{i}" for i in range(40)), "each request billed exactly once"


def test_the_request_error_choice_is_fixed_per_batch_and_request() -> None:
    picks = [hits(0.5, "batch_a", f"r{i}") for i in range(200)]

    assert picks == [hits(0.5, "batch_a", f"r{i}") for i in range(200)]
    assert picks != [hits(0.5, "batch_b", f"r{i}") for i in range(200)]
    assert 60 < sum(picks) < 140
    assert not any(hits(0.0, "batch_a", f"r{i}") for i in range(200))
    assert all(hits(1.0, "batch_a", f"r{i}") for i in range(200))


def test_stuck_batches_stay_validating_until_cancelled(start_server) -> None:
    clock, server, client = _faulty(start_server, "stuck=1")
    stuck = start_batch(client, _lines(3)).id
    normal = start_batch(client, _lines(3, "n")).id

    clock.advance(3600)

    assert client.batches.retrieve(stuck).status == "validating"
    assert client.batches.retrieve(normal).status == "completed"
    assert client.batches.cancel(stuck).status == "cancelling"
    clock.advance(1)
    cancelled = client.batches.retrieve(stuck)
    assert cancelled.status == "cancelled"
    assert cancelled.in_progress_at is None and cancelled.output_file_id is None
    assert [r["error"]["code"] for r in read_jsonl(client, cancelled.error_file_id)] == ["batch_cancelled"] * 3
    assert all(entry["batch_id"] == normal for entry in server.emulator.ledger())


def test_an_uncancelled_stuck_batch_expires_with_its_24_hour_window(start_server) -> None:
    clock, _, client = _faulty(start_server, "stuck=1")
    batch_id = start_batch(client, _lines(2)).id

    clock.advance(24 * 3600)
    batch = client.batches.retrieve(batch_id)

    assert batch.status == "expired"
    assert batch.expired_at == batch.expires_at


# ----- realtime faults --------------------------------------------------------------------------


def test_insufficient_quota_refuses_realtime_calls_and_batch_creation_without_retry_after(start_server) -> None:
    _, server, client = _faulty(start_server, "insufficient_quota")
    input_file_id = upload(client, _lines(1))

    with pytest.raises(openai.RateLimitError) as realtime:
        _hi(client)
    with pytest.raises(openai.RateLimitError) as create:
        client.batches.create(input_file_id=input_file_id, endpoint="/v1/chat/completions", completion_window="24h")

    expected = {"message": QUOTA_MESSAGE, "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}
    for refused in (realtime.value, create.value):
        assert refused.status_code == 429
        assert refused.response.json() == {"error": expected}
        assert "retry-after" not in refused.response.headers
        assert "retry-after-ms" not in refused.response.headers
    assert "x-ratelimit-remaining-tokens" in realtime.value.response.headers
    assert client.batches.list().data == []
    assert server.emulator.ledger() == []
    assert server.emulator.stats()["models"]["gpt-4o-mini"]["requests_429"] == 1


def test_http_429_answers_rate_limit_exceeded_with_retry_after_one_second(start_server) -> None:
    _, server, client = _faulty(start_server, "http_429=1")

    with pytest.raises(openai.RateLimitError) as refused:
        _hi(client)

    error = refused.value.response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("rate_limit_exceeded", "requests", None)
    assert error["message"].startswith("Rate limit reached for gpt-4o-mini in organization org-emulator")
    headers = refused.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "1000")
    assert headers["x-ratelimit-remaining-requests"] == "10000", "an injected 429 consumes nothing"
    assert server.emulator.ledger() == []


def test_http_5xx_answers_a_server_error_and_bills_nothing(start_server) -> None:
    _, server, client = _faulty(start_server, "http_5xx=1")
    statuses = set()

    for _ in range(12):
        with pytest.raises(openai.InternalServerError) as failed:
            _hi(client)
        statuses.add(failed.value.status_code)
        error = failed.value.response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("server_error", None, None)

    assert statuses <= {500, 502, 503} and 500 in statuses
    assert server.emulator.ledger() == []
    assert server.emulator.stats()["models"]["gpt-4o-mini"]["requests_5xx"] == 12


def _outcomes(start_server, spec: str, calls: int) -> list[str]:
    _, _, client = _faulty(start_server, spec)
    outcomes = []
    for _ in range(calls):
        try:
            _hi(client)
            outcomes.append("ok")
        except openai.RateLimitError:
            outcomes.append("429")
        except openai.InternalServerError:
            outcomes.append("5xx")
    return outcomes


def test_a_share_of_realtime_calls_fails_the_same_way_on_every_run(start_server) -> None:
    first = _outcomes(start_server, "http_429=0.3,http_5xx=0.2", 40)
    again = _outcomes(start_server, "http_429=0.3,http_5xx=0.2", 40)

    assert first == again
    assert {"ok", "429", "5xx"} == set(first)
    assert 10 <= first.count("ok") <= 30  # about half, from a fixed seed


# ----- unreadable lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("refuse_line=r2", [("invalid_json_line", 3)]), ("refuse_file=r2", [("invalid_file_format", None)])],
    ids=["naming-the-line", "naming-no-line"],
)
def test_a_file_holding_the_refused_request_fails_validation_and_one_without_it_runs(
    start_server, fault: str, expected: list
) -> None:
    clock, server, client = _faulty(start_server, fault)
    refused = start_batch(client, _lines(4))
    spared = start_batch(client, [line for line in _lines(4) if line["custom_id"] != "r2"])
    clock.advance(60)

    refused, spared = client.batches.retrieve(refused.id), client.batches.retrieve(spared.id)
    assert refused.status == "failed"
    assert [(e.code, e.line) for e in refused.errors.data] == expected
    assert spared.status == "completed" and spared.request_counts.completed == 3
    assert len(server.emulator.ledger()) == 3, "the refused file billed nothing"
    assert Faults.parse(fault).describe() == fault


# ----- schema_invalid: answers off their JSON Schema, per custom_id and attempt ----------------------

LABEL_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["yes", "no"]}, "reason": {"type": "string"}},
    "required": ["label", "reason"],
    "additionalProperties": False,
}
LABEL_FORMAT = {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": LABEL_SCHEMA}}


def _follows_schema(content: str) -> bool:
    import json

    import jsonschema

    try:
        return jsonschema.Draft202012Validator(LABEL_SCHEMA).is_valid(json.loads(content))
    except ValueError:
        return False


def test_schema_invalid_breaks_a_share_of_structured_batch_answers_and_a_resubmission_can_pass(start_server) -> None:
    clock, server, client = _faulty(start_server, "schema_invalid=0.5")
    lines = [chat_line(f"s{i}", f"prompt {i}") for i in range(40)]
    for line in lines:
        line["body"]["response_format"] = LABEL_FORMAT
    plain = chat_line("plain", "no schema here")

    batch_id = start_batch(client, [*lines, plain]).id
    clock.advance(100)
    batch = client.batches.retrieve(batch_id)
    outputs = {item["custom_id"]: item for item in read_jsonl(client, batch.output_file_id)}

    assert batch.status == "completed" and len(outputs) == 41, "every answer is a 200: off its schema, yet billed"
    off = {cid for cid, item in outputs.items() if cid != "plain" and not _follows_schema(_content(item))}
    assert off == {f"s{i}" for i in range(40) if hits(0.5, "schema_invalid", f"s{i}", "0")}, "fixed per attempt"
    assert 5 < len(off) < 35
    ledger = {entry["custom_id"]: entry for entry in server.emulator.ledger()}
    for cid, item in outputs.items():
        usage = item["response"]["body"]["usage"]
        assert (ledger[cid]["prompt_tokens"], ledger[cid]["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        ), "the answer off its schema is billed for the tokens it reports"

    again = start_batch(client, [line for line in lines if line["custom_id"] in off]).id
    clock.advance(100)
    second = {item["custom_id"]: item for item in read_jsonl(client, client.batches.retrieve(again).output_file_id)}
    passed = {cid for cid, item in second.items() if _follows_schema(_content(item))}
    assert passed == {cid for cid in off if not hits(0.5, "schema_invalid", cid, "1")} and passed


def test_schema_invalid_breaks_realtime_answers_by_attempt_so_asking_again_can_pass(start_server) -> None:
    _, _, client = _faulty(start_server, "schema_invalid=0.5")

    def ask(custom_id: str) -> bool:
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"label {custom_id}"}],
            response_format=LABEL_FORMAT,
            extra_headers={"X-Client-Request-Id": custom_id},
        )
        return _follows_schema(completion.choices[0].message.content or "")

    for custom_id in (f"q{i}" for i in range(12)):
        attempts = [ask(custom_id) for _ in range(3)]
        assert attempts == [not hits(0.5, "schema_invalid", custom_id, str(n)) for n in range(3)], custom_id


def test_schema_invalid_leaves_plain_answers_alone(start_server) -> None:
    _, _, client = _faulty(start_server, "schema_invalid=1")
    assert _hi(client).choices[0].message.content, "a request without a schema has nothing to break"


def _content(item: dict[str, Any]) -> str:
    return item["response"]["body"]["choices"][0]["message"]["content"]
