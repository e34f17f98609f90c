"""A batch driven through the official SDK: results, usage, order, lifecycle, cancel, expiry, listing."""

from __future__ import annotations

import openai
import pytest
from batchline.settings import load_settings

from batchline_local.emulator import OpenAIEmulator

from .helpers import (
    ManualClock,
    chat_line,
    read_jsonl,
    sdk_client,
    start_batch,
    tiktoken_chat_prompt_tokens,
    tiktoken_text_tokens,
    wait_for_batch,
)


def _prompts(count: int) -> dict[str, str]:
    return {f"request-{i}": f"Question number {i}: what is {i} times {i + 3}?" for i in range(count)}


def test_completed_batch_returns_every_request_once_with_tiktoken_usage(client: openai.OpenAI) -> None:
    prompts = _prompts(20)
    lines = [chat_line(custom_id, text, max_tokens=12) for custom_id, text in prompts.items()]

    created = start_batch(client, lines, metadata={"job_id": "job-1", "shard": "0"})
    assert created.status == "validating"
    assert created.output_file_id is None and created.completed_at is None

    batch = wait_for_batch(client, created.id)

    assert batch.status == "completed"
    assert batch.model == "gpt-4o-mini"
    assert batch.metadata == {"job_id": "job-1", "shard": "0"}
    assert batch.request_counts.total == 20
    assert batch.request_counts.completed == 20
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.expires_at == batch.created_at + 24 * 3600

    output_file = client.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output"
    results = read_jsonl(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in results) == sorted(prompts)
    assert [r["custom_id"] for r in results] != list(prompts), "output must not keep input order"

    total_input = total_output = 0
    for result in results:
        assert result["id"].startswith("batch_req_")
        assert result["error"] is None
        response = result["response"]
        assert response["status_code"] == 200
        assert response["request_id"]
        body = response["body"]
        assert body["object"] == "chat.completion"
        assert body["model"] == "gpt-4o-mini"
        content = body["choices"][0]["message"]["content"]
        messages = [{"role": "user", "content": prompts[result["custom_id"]]}]
        usage = body["usage"]
        assert usage["prompt_tokens"] == tiktoken_chat_prompt_tokens(messages, "o200k_base")
        assert usage["completion_tokens"] == tiktoken_text_tokens(content, "o200k_base")
        assert 1 <= usage["completion_tokens"] <= 12
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        total_input += usage["prompt_tokens"]
        total_output += usage["completion_tokens"]

    assert batch.usage.input_tokens == total_input
    assert batch.usage.output_tokens == total_output
    assert batch.usage.total_tokens == total_input + total_output
    assert batch.usage.input_tokens_details.cached_tokens == 0
    assert batch.usage.output_tokens_details.reasoning_tokens == 0


def test_batch_answer_equals_the_realtime_answer_for_the_same_request(client: openai.OpenAI) -> None:
    line = chat_line("only", "Name three rivers.", max_tokens=30)

    batch = wait_for_batch(client, start_batch(client, [line]).id)
    batch_body = read_jsonl(client, batch.output_file_id)[0]["response"]["body"]
    realtime = client.chat.completions.create(**line["body"])

    assert realtime.choices[0].message.content == batch_body["choices"][0]["message"]["content"]
    assert realtime.usage.prompt_tokens == batch_body["usage"]["prompt_tokens"]
    assert realtime.usage.completion_tokens == batch_body["usage"]["completion_tokens"]


def test_embeddings_batch_returns_vectors_and_input_token_usage(client: openai.OpenAI) -> None:
    texts = {"e1": "the quick brown fox", "e2": "jumps over the lazy dog"}
    lines = [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": text},
        }
        for custom_id, text in texts.items()
    ]

    batch = wait_for_batch(client, start_batch(client, lines, endpoint="/v1/embeddings").id)

    assert batch.status == "completed"
    results = {r["custom_id"]: r["response"]["body"] for r in read_jsonl(client, batch.output_file_id)}
    assert set(results) == set(texts)
    for custom_id, body in results.items():
        assert body["object"] == "list"
        assert len(body["data"][0]["embedding"]) == 1536
        expected = tiktoken_text_tokens(texts[custom_id], "cl100k_base")
        assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert batch.usage.output_tokens == 0


def test_request_the_endpoint_refuses_goes_to_the_error_file_and_is_not_billed(client: openai.OpenAI, server) -> None:
    good = chat_line("good", "Hello there")
    no_messages = {
        "custom_id": "no-messages",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini"},
    }

    batch = wait_for_batch(client, start_batch(client, [good, no_messages]).id)

    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    assert [r["custom_id"] for r in read_jsonl(client, batch.output_file_id)] == ["good"]
    [refused] = read_jsonl(client, batch.error_file_id)
    assert refused["custom_id"] == "no-messages"
    assert refused["error"] is None
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "messages"
    assert refused["response"]["body"]["error"]["type"] == "invalid_request_error"
    billed = [entry["custom_id"] for entry in server.emulator.ledger()]
    assert billed == ["good"]


def test_batch_where_every_request_is_refused_completes_without_an_output_file(client: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": f"bad-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o"},
        }
        for i in range(3)
    ]

    batch = wait_for_batch(client, start_batch(client, lines).id)

    assert batch.status == "completed"
    assert batch.output_file_id is None
    assert batch.request_counts.failed == 3
    assert len(read_jsonl(client, batch.error_file_id)) == 3


@pytest.fixture
def clocked(start_server):
    """An emulator on a manual clock: 10 s validating, 100 s in progress, 5 s finalizing."""
    clock = ManualClock()
    settings = load_settings(
        {"emulator": {"validating_seconds": 10, "in_progress_seconds": 100, "finalizing_seconds": 5}}
    )
    server = start_server(OpenAIEmulator(settings, clock=clock))
    return clock, server, sdk_client(server)


def test_status_follows_the_configured_pace(clocked) -> None:
    clock, _, client = clocked
    lines = [chat_line(f"r{i}", f"prompt {i}") for i in range(4)]
    batch_id = start_batch(client, lines).id
    created_at = int(clock.now)

    clock.advance(9)
    assert client.batches.retrieve(batch_id).status == "validating"

    clock.advance(2)  # 11 s: in progress, the first of four slots (25 s each) not yet reached
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "in_progress"
    assert batch.in_progress_at == created_at + 10
    assert batch.request_counts.total == 4
    assert batch.request_counts.completed == 0

    clock.advance(50)  # 61 s: two of four requests done
    batch = client.batches.retrieve(batch_id)
    assert batch.request_counts.completed == 2
    assert batch.usage.input_tokens > 0
    assert batch.output_file_id is None

    clock.advance(50)  # 111 s: all done, finalizing until 115 s
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "finalizing"
    assert batch.finalizing_at == created_at + 110
    assert batch.request_counts.completed == 4

    clock.advance(5)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "completed"
    assert batch.completed_at == created_at + 115
    assert len(read_jsonl(client, batch.output_file_id)) == 4


def test_cancel_keeps_finished_work_and_lists_the_rest_as_batch_cancelled(clocked) -> None:
    clock, server, client = clocked
    lines = [chat_line(f"r{i}", f"prompt {i}") for i in range(4)]
    batch_id = start_batch(client, lines).id
    clock.advance(10 + 50)  # half of the in_progress span: two requests executed

    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at == int(clock.now)
    assert client.batches.cancel(batch_id).status == "cancelling", "a second cancel is harmless"

    clock.advance(5)
    batch = client.batches.retrieve(batch_id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at == int(clock.now)
    assert batch.request_counts.completed == 2
    done = [r["custom_id"] for r in read_jsonl(client, batch.output_file_id)]
    not_run = read_jsonl(client, batch.error_file_id)
    assert len(done) == 2
    assert all(r["response"] is None and r["error"]["code"] == "batch_cancelled" for r in not_run)
    assert sorted(done + [r["custom_id"] for r in not_run]) == ["r0", "r1", "r2", "r3"]
    assert sorted(entry["custom_id"] for entry in server.emulator.ledger()) == sorted(done)

    clock.advance(1000)
    assert client.batches.retrieve(batch_id).request_counts.completed == 2, "nothing runs after a cancel"


def test_cancelling_a_finished_batch_is_refused(client: openai.OpenAI) -> None:
    batch = wait_for_batch(client, start_batch(client, [chat_line("a", "hi")]).id)

    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)
    assert client.batches.retrieve(batch.id).status == "completed"


def test_batch_unfinished_after_24_hours_expires_keeping_finished_work(start_server) -> None:
    clock = ManualClock()
    settings = load_settings({"emulator": {"in_progress_seconds": 60 * 3600}})
    client = sdk_client(start_server(OpenAIEmulator(settings, clock=clock)))
    batch_id = start_batch(client, [chat_line(f"r{i}", f"prompt {i}") for i in range(4)]).id

    clock.advance(25 * 3600)
    batch = client.batches.retrieve(batch_id)

    assert batch.status == "expired"
    assert batch.expired_at == batch.expires_at
    assert batch.request_counts.completed == 1  # one of four 15 h slots fits in 24 h
    expired = read_jsonl(client, batch.error_file_id)
    assert [r["error"]["code"] for r in expired] == ["batch_expired"] * 3
    assert len(read_jsonl(client, batch.output_file_id)) == 1


def test_unknown_batch_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_does_not_exist")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_does_not_exist")


def test_batches_list_newest_first_with_cursor_pagination(client: openai.OpenAI) -> None:
    created = [start_batch(client, [chat_line("a", f"batch {i}")]).id for i in range(5)]
    newest_first = list(reversed(created))

    first_page = client.batches.list(limit=2)
    assert [b.id for b in first_page.data] == newest_first[:2]
    assert first_page.has_more is True
    assert first_page.first_id == newest_first[0] and first_page.last_id == newest_first[1]

    second_page = client.batches.list(limit=2, after=first_page.data[-1].id)
    assert [b.id for b in second_page.data] == newest_first[2:4]

    last_page = client.batches.list(limit=2, after=newest_first[3])
    assert [b.id for b in last_page.data] == newest_first[4:]
    assert last_page.has_more is False

    assert [b.id for b in client.batches.list(limit=2)] == newest_first, "auto-pagination reaches every batch"
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)


def test_batches_list_returns_each_batch_metadata_as_given_so_a_shard_batch_can_be_found(client: openai.OpenAI) -> None:
    # Given batches tagged like batchline tags its shards, one with no metadata, and more than one page of them
    tags = [{"job_id": "job-a", "shard": str(i), "note": "é ✓ spaces and: colons"} for i in range(4)]
    created = {start_batch(client, [chat_line("a", f"shard {i}")], metadata=tag).id: tag for i, tag in enumerate(tags)}
    untagged = start_batch(client, [chat_line("a", "untagged")]).id
    empty = start_batch(client, [chat_line("a", "empty")], metadata={}).id

    # When the pages are walked by hand, newest first
    pages = [client.batches.list(limit=2)]
    while pages[-1].has_more:
        pages.append(client.batches.list(limit=2, after=pages[-1].last_id))

    # Then every page says where it starts and ends, and the metadata comes back exactly as given
    assert [len(page.data) for page in pages] == [2, 2, 2]
    assert [page.has_more for page in pages] == [True, True, False]
    for page in pages:
        assert (page.first_id, page.last_id) == (page.data[0].id, page.data[-1].id)
    listed = {batch.id: batch.metadata for page in pages for batch in page.data}
    assert list(listed) == [empty, untagged, *reversed(created)]
    assert {batch_id: listed[batch_id] for batch_id in created} == created
    assert listed[untagged] is None and listed[empty] == {}
    found = [b.id for b in client.batches.list(limit=100) if (b.metadata or {}).get("shard") == "2"]
    assert found == [list(created)[2]]


def test_a_page_after_the_last_batch_is_empty(client: openai.OpenAI) -> None:
    only = start_batch(client, [chat_line("a", "hi")]).id

    page = client.batches.list(limit=5, after=only)

    assert (page.data, page.has_more, page.first_id, page.last_id) == ([], False, None, None)
