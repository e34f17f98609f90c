"""The billing ledger: every executed request exactly once, over the API and over HTTP."""

from __future__ import annotations

import json
import urllib.request

import openai

from .helpers import chat_line, read_jsonl, start_batch, wait_for_batch


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
