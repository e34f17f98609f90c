"""The Files API: upload, retrieve, download, list and delete, plus what an unknown id or no key gives."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from .helpers import chat_line, jsonl


def test_uploaded_file_round_trips_byte_for_byte(client: openai.OpenAI) -> None:
    content = jsonl([chat_line("a", "héllo wörld"), chat_line("b", "second")])

    created = client.files.create(file=("requests.jsonl", content), purpose="batch")

    assert created.id.startswith("file-")
    assert (created.object, created.purpose, created.status) == ("file", "batch", "processed")
    assert created.filename == "requests.jsonl"
    assert created.bytes == len(content)
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == content


def test_files_list_newest_first_and_filters_by_purpose(client: openai.OpenAI) -> None:
    first = client.files.create(file=("a.jsonl", jsonl([chat_line("a", "hi")])), purpose="batch").id
    second = client.files.create(file=("b.txt", b"notes"), purpose="user_data").id
    third = client.files.create(file=("c.jsonl", jsonl([chat_line("c", "hi")])), purpose="batch").id

    assert [f.id for f in client.files.list()] == [third, second, first]
    assert [f.id for f in client.files.list(purpose="batch")] == [third, first]
    assert [f.id for f in client.files.list(order="asc", limit=1)] == [first, second, third]


def test_deleted_file_is_gone(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("a.jsonl", jsonl([chat_line("a", "hi")])), purpose="batch").id

    deleted = client.files.delete(file_id)

    assert (deleted.id, deleted.deleted) == (file_id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(file_id)
    assert file_id not in [f.id for f in client.files.list()]


def test_unknown_file_gives_openai_error_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve("file-nope")

    assert missing.value.status_code == 404
    assert missing.value.body["type"] == "invalid_request_error"
    assert "file-nope" in missing.value.body["message"]


def test_upload_without_a_file_part_is_refused(server) -> None:
    request = urllib.request.Request(
        f"{server.base_url}/files",
        data=b"purpose=batch",
        headers={"Authorization": "Bearer test", "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)

    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"]["param"] == "file"


def test_request_without_api_key_is_refused(server) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.base_url}/files", timeout=5)

    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["type"] == "invalid_request_error"
