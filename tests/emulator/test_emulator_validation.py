"""The refusals OpenAI makes, at upload, at batch creation, and at batch validation."""

from __future__ import annotations

import json

import openai
import pytest

from batchline_local.emulator import OpenAIEmulator

from .helpers import chat_line, jsonl, sdk_client, start_batch, upload, wait_for_batch


@pytest.fixture
def small_limits_client(start_server, fast_settings) -> openai.OpenAI:
    """An emulator whose file limits are 2,000 bytes and 3 requests, so the limits are cheap to hit."""
    emulator = OpenAIEmulator(fast_settings, max_bytes_per_file=2_000, max_requests_per_file=3)
    return sdk_client(start_server(emulator))


def test_upload_larger_than_the_byte_limit_is_refused(small_limits_client: openai.OpenAI) -> None:
    oversized = [chat_line("big", "x" * 2_100)]

    with pytest.raises(openai.BadRequestError) as refused:
        upload(small_limits_client, oversized)
    assert refused.value.body["param"] == "file"
    assert small_limits_client.files.list().data == [], "nothing is stored"


def test_upload_with_more_requests_than_the_limit_is_refused(small_limits_client: openai.OpenAI) -> None:
    lines = [chat_line(f"r{i}", "hi") for i in range(4)]

    with pytest.raises(openai.BadRequestError):
        upload(small_limits_client, lines)
    assert upload(small_limits_client, lines[:3]).startswith("file-"), "exactly the limit is accepted"


def test_upload_that_is_not_utf8_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, b'{"custom_id": "a"}\n\xff\xfe not utf-8\n')
    assert refused.value.body["code"] == "invalid_file_format"
    assert client.files.list().data == [], "nothing is stored"


def _raw(line: dict, custom_id: str) -> str:
    """The line with its custom_id written raw, as json.dumps would not (it escapes U+2028)."""
    return json.dumps(line).replace('"PLACEHOLDER"', '"' + custom_id + '"')


@pytest.mark.parametrize(
    ("line", "refused_lines"),
    [
        ("{not json", [2]),
        ("[1, 2, 3]", [2]),
        (_raw(chat_line("PLACEHOLDER", "hi"), "id\u2028raw"), [2, 3]),
        (_raw(chat_line("PLACEHOLDER", "hi"), "id\x85raw"), [2, 3]),
        (json.dumps(chat_line("b", "hi")).replace(', "method"', ',\r"method"'), [2, 3]),
    ],
    ids=["unparseable", "not-an-object", "raw-U+2028-in-custom_id", "raw-U+0085-in-custom_id", "raw-CR-as-white-space"],
)
def test_a_line_that_is_not_a_json_object_fails_the_batch_naming_the_line(
    client: openai.OpenAI, server, line: str, refused_lines: list[int]
) -> None:
    """The provider splits the file as str.splitlines does: a raw line separator inside a request
    makes two lines that are not JSON objects, and the lines after it are numbered one further on."""
    lines = [chat_line("a", "hi"), line, chat_line("c", "hi")]

    errors = _failed_errors(client, lines)

    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("invalid_json_line", number, None) for number in refused_lines
    ]
    assert all(e["message"] for e in errors)
    assert server.emulator.ledger() == [], "a refused file bills nothing"


def test_same_bytes_with_another_purpose_are_stored_unchecked(client: openai.OpenAI) -> None:
    file_id = upload(client, b"not jsonl at all", purpose="user_data")

    assert client.files.retrieve(file_id).purpose == "user_data"


def _failed_errors(client: openai.OpenAI, lines: list, endpoint: str = "/v1/chat/completions") -> list[dict]:
    batch = wait_for_batch(client, start_batch(client, lines, endpoint=endpoint).id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors.object == "list"
    return [error.model_dump() for error in batch.errors.data]


def test_duplicate_custom_id_fails_the_batch_naming_the_line(client: openai.OpenAI, server) -> None:
    lines = [chat_line("a", "one"), chat_line("b", "two"), chat_line("a", "three")]

    errors = _failed_errors(client, lines)

    assert [(e["code"], e["line"], e["param"]) for e in errors] == [("duplicate_custom_id", 3, "custom_id")]
    assert server.emulator.ledger() == [], "a failed batch bills nothing"


def test_mixed_models_fail_the_batch(client: openai.OpenAI) -> None:
    lines = [chat_line("a", "one"), chat_line("b", "two", model="gpt-4o"), chat_line("c", "three")]

    errors = _failed_errors(client, lines)

    assert [(e["code"], e["line"], e["param"]) for e in errors] == [("mismatched_model", 2, "body.model")]


def test_url_not_matching_the_batch_endpoint_fails_the_batch(client: openai.OpenAI) -> None:
    embedding = {
        "custom_id": "e",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "gpt-4o-mini", "input": "x"},
    }
    unsupported = {**chat_line("u", "hi"), "url": "/v1/images/generations"}

    errors = _failed_errors(client, [chat_line("a", "hi"), embedding, unsupported])

    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("mismatched_endpoint", 2, "url"),
        ("invalid_url", 3, "url"),
    ]


def test_line_missing_required_fields_fails_the_batch(client: openai.OpenAI) -> None:
    no_custom_id = {"method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}
    no_model = {**chat_line("b", "hi"), "body": {"messages": [{"role": "user", "content": "hi"}]}}

    errors = _failed_errors(client, [chat_line("a", "hi"), no_custom_id, no_model])

    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("missing_required_parameter", 2, "custom_id"),
        ("missing_required_parameter", 3, "body.model"),
    ]


def test_blank_lines_are_ignored_but_count_for_line_numbers(client: openai.OpenAI) -> None:
    content = jsonl([chat_line("a", "hi"), "", chat_line("a", "again")])

    batch = client.batches.create(
        input_file_id=upload(client, content), endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_for_batch(client, batch.id)

    assert [(e.code, e.line) for e in batch.errors.data] == [("duplicate_custom_id", 3)]


def _create(client: openai.OpenAI, **overrides):
    arguments = {
        "input_file_id": upload(client, [chat_line("a", "hi")]),
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **overrides,
    }
    return client.batches.create(**arguments)


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"completion_window": "48h"}, "completion_window"),
        ({"endpoint": "/v1/images/generations"}, "endpoint"),
        ({"input_file_id": "file-does-not-exist"}, "input_file_id"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ],
    ids=["window", "endpoint", "unknown-file", "17-metadata-pairs", "long-key", "long-value"],
)
def test_batch_create_refuses_invalid_arguments(client: openai.OpenAI, overrides: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _create(client, **overrides)

    assert refused.value.body["param"] == param
    assert client.batches.list().data == []


def test_metadata_at_the_limits_is_accepted(client: openai.OpenAI) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}

    assert _create(client, metadata=metadata).metadata == metadata


def test_batch_input_must_be_a_batch_purpose_file(client: openai.OpenAI) -> None:
    other = upload(client, jsonl([chat_line("a", "hi")]), purpose="user_data")

    with pytest.raises(openai.BadRequestError):
        _create(client, input_file_id=other)


def test_empty_input_file_fails_the_batch(client: openai.OpenAI) -> None:
    batch = client.batches.create(
        input_file_id=upload(client, b""), endpoint="/v1/chat/completions", completion_window="24h"
    )

    batch = wait_for_batch(client, batch.id)

    assert batch.status == "failed"
    assert [e.code for e in batch.errors.data] == ["empty_file"]
    assert json.loads(client.batches.retrieve(batch.id).model_dump_json())["request_counts"]["total"] == 0
