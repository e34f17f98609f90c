"""The emulator counts tokens on its own, straight from tiktoken, and agrees with batchline's counter.

Two counts written apart: when they differ, one of them bills wrongly, and the end-to-end runs
(which compare the job's accounting with the emulator's ledger) would show it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from batchline.domain.tokens import max_output_tokens
from batchline.engines.tokenization import token_counter

from batchline_local.emulator.token_counts import output_cap, prompt_tokens, text_tokens

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"sku": "A-1"}'}}

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You label customer feedback. Reply with one word."},
                {"role": "user", "name": "alice", "content": "The kettle arrived  late, but it works 🤔"},
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "in stock\n  since Monday"},
            ],
            "max_tokens": 12,
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "x"}}],
                },
                {"role": "user", "content": "before <|endoftext|> after"},
            ],
        },
    ),
    ("/v1/responses", {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Summarise: a red kettle."}),
    (
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}]},
    ),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "a red kettle\u00a0 on the shelf"}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["first", "a second one", [1, 2, 3], []]}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": [101, 202, 303, 404]}),
    ("/v1/moderations", {"input": [{"type": "text", "text": "is this fine?"}, {"type": "image_url"}]}),
    ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": ["Once upon a time", [7, 8]]}),
]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize(("url", "body"), REQUESTS, ids=[f"{url}-{i}" for i, (url, _) in enumerate(REQUESTS)])
def test_the_emulators_prompt_tokens_equal_batchlines(url: str, body: dict[str, Any], encoding: str) -> None:
    assert prompt_tokens(url, body, encoding) == token_counter(encoding).prompt_tokens(url, body)


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_the_emulators_text_tokens_equal_batchlines(encoding: str) -> None:
    texts = ["", "Alpha answer batch", "two  spaces", "line\n space", "ünïcödé\u3000 wörds", "<|endoftext|>"]

    assert [text_tokens(text, encoding) for text in texts] == [token_counter(encoding).text(text) for text in texts]


@pytest.mark.parametrize(("url", "body"), REQUESTS, ids=[f"{url}-{i}" for i, (url, _) in enumerate(REQUESTS)])
def test_the_emulators_output_cap_equals_batchlines(url: str, body: dict[str, Any]) -> None:
    assert output_cap(url, body, 256) == max_output_tokens(url, body, 256)


def test_answering_a_request_never_loads_batchlines_token_counter() -> None:
    script = (
        "import sys\n"
        "from batchline.settings import Settings\n"
        "from batchline_local.emulator import OpenAIEmulator\n"
        "body = {'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': 'hi'}]}\n"
        "assert OpenAIEmulator(Settings()).realtime('/v1/chat/completions', body).body['usage']['prompt_tokens']\n"
        "print(sorted(m for m in sys.modules if m.startswith('batchline.engines')))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert run.stdout.strip() == "[]"
