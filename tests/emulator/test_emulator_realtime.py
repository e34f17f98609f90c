"""The realtime endpoints through the SDK: bodies, tiktoken usage, determinism, headers, refusals."""

from __future__ import annotations

import openai
import pytest
from batchline.adapters.openai_realtime import OpenAIRealtime

from .helpers import tiktoken_chat_prompt_tokens, tiktoken_text_tokens

RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


def test_chat_completion_usage_matches_tiktoken(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the plot of Hamlet in one line.", "name": "reader"},
    ]

    completion = client.chat.completions.create(model="gpt-4o", messages=messages)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert (choice.index, choice.message.role, choice.finish_reason) == (0, "assistant", "stop")
    assert completion.usage.prompt_tokens == tiktoken_chat_prompt_tokens(messages, "o200k_base")
    assert completion.usage.completion_tokens == tiktoken_text_tokens(choice.message.content, "o200k_base")
    assert 1 <= completion.usage.completion_tokens <= 40
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_model_encoding_comes_from_the_price_table(client: openai.OpenAI) -> None:
    text = "Déjà vu: 日本語のテキスト, naïve café ñandú 🙂"
    assert tiktoken_text_tokens(text, "cl100k_base") != tiktoken_text_tokens(text, "o200k_base")
    messages = [{"role": "user", "content": text}]

    legacy = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages)
    unknown = client.chat.completions.create(model="some-future-model", messages=messages)

    assert legacy.usage.prompt_tokens == tiktoken_chat_prompt_tokens(messages, "cl100k_base")
    assert unknown.usage.prompt_tokens == tiktoken_chat_prompt_tokens(messages, "o200k_base")


def test_max_tokens_caps_the_answer(client: openai.OpenAI) -> None:
    capped = [
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"Tell me story {i}"}], max_tokens=3
        )
        for i in range(10)
    ]

    assert all(c.usage.completion_tokens <= 3 for c in capped)
    assert any(c.choices[0].finish_reason == "length" for c in capped)


def test_same_request_gets_the_same_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Pick a colour."}]

    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    other = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Pick a number."}]
    )

    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.id != again.id
    assert other.choices[0].message.content != first.choices[0].message.content


def test_responses_api_usage_matches_tiktoken(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="gpt-4.1-mini", instructions="Answer briefly.", input="What is the capital of France?"
    )

    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == ("response", "completed", "gpt-4.1-mini")
    assert response.output[0].type == "message"
    assert response.output_text
    expected_input = tiktoken_text_tokens("Answer briefly.", "o200k_base") + tiktoken_text_tokens(
        "What is the capital of France?", "o200k_base"
    )
    assert response.usage.input_tokens == expected_input
    assert response.usage.output_tokens == tiktoken_text_tokens(response.output_text, "o200k_base")
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0


def test_completions_and_moderations_answer(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time")
    moderation = client.moderations.create(input=["a kind sentence", "another one"])

    assert completion.object == "text_completion"
    assert completion.usage.completion_tokens <= 16, "the completions endpoint defaults to 16 tokens"
    assert completion.usage.prompt_tokens == tiktoken_text_tokens("Once upon a time", "o200k_base")
    assert moderation.model == "omni-moderation-latest"
    assert [r.flagged for r in moderation.results] == [False, False]


def test_every_response_carries_request_id_and_rate_limit_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=100
    )
    completion = raw.parse()

    assert raw.headers["x-request-id"].startswith("req_")
    assert all(name in raw.headers for name in RATE_LIMIT_HEADERS)
    limit = int(raw.headers["x-ratelimit-limit-tokens"])
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == limit - completion.usage.prompt_tokens - 100


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}]),
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        ),
        lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=[]),
        lambda c: c.embeddings.create(model="text-embedding-3-small", input=[{"not": "valid"}]),
    ],
    ids=["no-model", "stream", "no-messages", "bad-embedding-input"],
)
def test_invalid_realtime_request_is_a_bad_request_and_not_billed(client: openai.OpenAI, server, call) -> None:
    with pytest.raises(openai.BadRequestError):
        call(client)

    assert server.emulator.ledger() == []


def test_unknown_endpoint_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="a cat", model="dall-e-3")


AWKWARD_IDS = ["   ", "ünïcødé-✓", "line\nbreak", "para\u2028graph", "100%25 done", "x" * 600]


@pytest.mark.parametrize("custom_id", AWKWARD_IDS, ids=["spaces", "unicode", "newline", "u2028", "percent", "long"])
def test_the_realtime_adapter_sends_any_custom_id_and_is_billed_under_it(server, custom_id: str) -> None:
    adapter = OpenAIRealtime(api_key="test", base_url=server.base_url, timeout_seconds=10)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}

    answer = adapter.call("/v1/chat/completions", body, client_request_id=custom_id)

    assert answer.status == 200
    [entry] = server.emulator.ledger()
    # the header holds at most 512 characters: a longer id is billed under its first ones
    assert entry["custom_id"] == custom_id if len(custom_id) < 500 else custom_id.startswith(entry["custom_id"])
