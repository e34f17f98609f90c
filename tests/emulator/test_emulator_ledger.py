"""The billing ledger: every executed request exactly once, over the API and over HTTP."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest
from batchline.settings import load_settings

from batchline_local.emulator import OpenAIEmulator, billed_twice, fetch_ledger

from .helpers import ManualClock, chat_line, read_jsonl, sdk_client, start_batch, wait_for_batch


def test_ledger_bills_each_batch_request_once_and_each_realtime_call(client: openai.OpenAI, server) -> None:
    batch = wait_for_batch(client, start_batch(client, [chat_line(f"r{i}", f"prompt {i}") for i in range(3)]).id)
    realtime = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    client.batches.retrieve(batch.id)  # reading a finished batch again must not bill again

    ledger = server.emulator.ledger()

    batch_entries = [entry for entry in ledger if entry["batch_id"] == batch.id]
    assert sorted(entry["custom_id"] for entry in batch_entries) == ["r0", "r1", "r2"]
    results = {r["custom_id"]: r["response"]["body"]["usage"] for r in read_jsonl(client, batch.output_file_id)}
    for entry in batch_entries:
        assert (entry["model"], entry["url"]) == ("gpt-4o-mini", "/v1/chat/completions")
        usage = results[entry["custom_id"]]
        assert (entry["prompt_tokens"], entry["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
    [realtime_entry] = [entry for entry in ledger if entry["batch_id"] is None]
    assert realtime_entry == {
        "custom_id": None,
        "batch_id": None,
        "model": "gpt-4o",
        "url": "/v1/chat/completions",
        "prompt_tokens": realtime.usage.prompt_tokens,
        "completion_tokens": realtime.usage.completion_tokens,
    }
    assert len(ledger) == 4


def test_ledger_is_served_over_http(client: openai.OpenAI, server) -> None:
    client.embeddings.create(model="text-embedding-3-small", input="hello")

    with urllib.request.urlopen(f"{server.root_url}/_emulator/ledger", timeout=5) as response:
        served = json.loads(response.read())

    assert served["data"] == server.emulator.ledger()
    assert [(e["url"], e["completion_tokens"]) for e in served["data"]] == [("/v1/embeddings", 0)]


def test_a_request_billed_in_two_batches_and_once_realtime_is_found_billed_three_times(
    client: openai.OpenAI, server
) -> None:
    # Given the same request sent in two batches (as a rerun that forgot the first would) and realtime
    lines = [chat_line("twice", "same question"), chat_line("once", "other question")]
    for _ in range(2):
        wait_for_batch(client, start_batch(client, lines).id)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "same question"}],
        extra_headers={"X-Client-Request-Id": "twice"},
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "untagged"}])
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "untagged"}])

    # When a test reads the ledger over HTTP
    rows = fetch_ledger(server.root_url)

    # Then the custom_id paid for more than once is named with its count; untagged calls are left out
    assert billed_twice(rows) == {"twice": 3, "once": 2}
    assert sum(1 for row in rows if row["custom_id"] is None) == 2


def test_only_executed_requests_are_billed(start_server) -> None:
    # Given a token-limited batch, then one that expires half done and holds a line the endpoint refuses
    clock = ManualClock()
    pace = {"validating_seconds": 1, "in_progress_seconds": 10, "finalizing_seconds": 1}
    settings = load_settings({"emulator": {**pace, "faults": "token_limit=1,expire=0.5"}})
    server = start_server(OpenAIEmulator(settings, clock=clock))
    client = sdk_client(server)
    refused_line = {
        "custom_id": "x-bad",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini"},
    }
    token_limited = start_batch(client, [chat_line("t0", "a"), chat_line("t1", "b")]).id
    expiring = start_batch(client, [chat_line(f"e{i}", f"q {i}") for i in range(3)] + [refused_line]).id

    # When both have ended
    clock.advance(100)
    batches = {batch_id: client.batches.retrieve(batch_id) for batch_id in (token_limited, expiring)}

    # Then the ledger holds exactly the output-file lines: no token-limited, expired or refused request
    assert [batches[b].status for b in (token_limited, expiring)] == ["failed", "expired"]
    expired = batches[expiring]
    executed = read_jsonl(client, expired.output_file_id) if expired.output_file_id else []
    not_billed = read_jsonl(client, expired.error_file_id)
    assert len(executed) + sum(1 for line in not_billed if line["response"] is not None) == 2, "half of four ran"
    assert {line["error"]["code"] for line in not_billed if line["response"] is None} == {"batch_expired"}
    billed = fetch_ledger(server.root_url)
    assert sorted(row["custom_id"] for row in billed) == sorted(line["custom_id"] for line in executed)
    assert all(row["batch_id"] == expiring for row in billed)
    assert expired.usage.input_tokens == sum(row["prompt_tokens"] for row in billed)


@pytest.mark.parametrize("rows", [[], [{"custom_id": "a"}, {"custom_id": "b"}], [{"custom_id": None}] * 3])
def test_nothing_is_reported_billed_twice_when_each_custom_id_is_billed_at_most_once(rows) -> None:
    assert billed_twice(rows) == {}
