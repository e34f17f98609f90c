"""The fast decoding path and the general path accept the same lines and count the same tokens."""

from __future__ import annotations

import json

import pytest
from batchline.composition import model_table, price_book
from batchline.domain.request_line import InvalidLine, RequestValidator, ValidRequest
from batchline.engines.tokenization import token_counter
from batchline.settings import BATCH_ENDPOINTS, load_settings
from lines import BAD_LINES

from batchline_local.samples import mixed_example


def envelope(url: str, body) -> bytes:
    return json.dumps({"custom_id": "x", "method": "POST", "url": url, "body": body}).encode()


SHAPES = [
    envelope("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    envelope(
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "name": "bo", "content": "hi"}], "max_tokens": 3},
    ),
    envelope(
        "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "name": None, "content": "hi"}]}
    ),
    envelope(
        "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "assistant"}], "max_completion_tokens": 0}
    ),
    envelope(
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    ),
    envelope(
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
    ),
    envelope(
        "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}
    ),
    envelope(
        "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}
    ),
    envelope(
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": None, "max_output_tokens": 5},
    ),
    envelope("/v1/chat/completions", {"model": "gpt-4o", "messages": []}),
    envelope("/v1/chat/completions", {"model": "", "messages": [{"role": "user", "content": "x"}]}),
    envelope("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "", "b c"]}),
    envelope("/v1/embeddings", {"model": "text-embedding-3-small", "input": [1, 2, 3]}),
    envelope("/v1/embeddings", {"model": "text-embedding-3-small", "input": ""}),
    envelope("/v1/embeddings", {"model": "text-embedding-3-small", "input": []}),
    envelope("/v1/moderations", {"model": "omni-moderation-latest", "input": "is this fine"}),
    envelope("/v1/completions", {"model": "gpt-3.5-turbo", "prompt": ["one", "two"]}),
    envelope("/v1/completions", {"model": "gpt-3.5-turbo", "prompt": "one", "max_tokens": 7}),
    envelope("/v1/responses", {"model": "gpt-4o-mini", "input": "sum up", "instructions": "be brief"}),
    envelope("/v1/responses", {"model": "gpt-4o-mini", "input": [{"role": "user", "content": "sum up"}]}),
    envelope("/v1/responses", {"model": "gpt-4o-mini", "input": ""}),
    envelope("/v1/responses", {"model": "no-such-model", "input": "x"}),
    b'{"custom_id": "x\xff", "method": "POST"}',
    *[raw.encode() for raw, _ in BAD_LINES],
    *list(mixed_example(60, seed=7)),
]


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(load_settings()),
        models=model_table(load_settings()),
        assumed_output_tokens=99,
        max_line_bytes=1 << 20,
        token_counters=token_counter,
    )


def outcome_fields(outcome):
    if isinstance(outcome, ValidRequest):
        return (
            "valid",
            outcome.custom_id,
            outcome.url,
            outcome.model,
            outcome.max_output_tokens,
            outcome.count_prompt_tokens(),
        )
    assert isinstance(outcome, InvalidLine)
    return ("invalid", outcome.custom_id, outcome.code, outcome.message)


@pytest.mark.parametrize("raw", SHAPES, ids=range(len(SHAPES)))
def test_both_paths_agree(validator, raw):
    assert outcome_fields(validator.validate(5, raw)) == outcome_fields(validator._validate_general(5, raw))
