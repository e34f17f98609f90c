"""Builders of batch input lines for tests of every tier."""

from __future__ import annotations

import json


def chat(custom_id: str, text: str = "Classify: the parcel came late.", model: str = "gpt-4o-mini", **body) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 20, **body},
        }
    )


def embedding(custom_id: str, text: str = "a red kettle", model: str = "text-embedding-3-small") -> str:
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": model, "input": text}}
    )


def response(custom_id: str, text: str = "Summarise: great value.", model: str = "gpt-4o-mini") -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": model, "input": text, "max_output_tokens": 30},
        }
    )


# One of every kind of bad line the validator knows, with the code it must produce.
# ruff: noqa: E501 (each bad line reads best whole)
BAD_LINES: list[tuple[str, str]] = [
    ('{"custom_id": "broken", "method": "POST"', "invalid_json"),
    ('["a", "list"]', "not_an_object"),
    (
        '{"method": "POST", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": "x"}}',
        "missing_custom_id",
    ),
    (
        '{"custom_id": "", "method": "POST", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": "x"}}',
        "invalid_custom_id",
    ),
    (
        '{"custom_id": "bad-method", "method": "GET", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": "x"}}',
        "invalid_method",
    ),
    (
        '{"custom_id": "bad-url", "method": "POST", "url": "/v1/images", "body": {"model": "gpt-4o-mini"}}',
        "invalid_url",
    ),
    ('{"custom_id": "bad-body", "method": "POST", "url": "/v1/chat/completions", "body": "hello"}', "invalid_body"),
    (
        '{"custom_id": "no-model", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}',
        "missing_model",
    ),
    (
        '{"custom_id": "odd-model", "method": "POST", "url": "/v1/embeddings", "body": {"model": "no-such-model", "input": "x"}}',
        "unknown_model",
    ),
    (
        '{"custom_id": "no-messages", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}',
        "missing_field",
    ),
]
