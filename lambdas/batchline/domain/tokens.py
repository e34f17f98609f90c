"""Prompt tokens the way OpenAI bills them: what of a request is counted, and what a counter is.

Chat messages follow OpenAI's published counting rule for the gpt-3.5/gpt-4/gpt-4o families:
3 tokens of overhead per message, 1 more when a message carries a ``name``, and 3 for the
primed reply. A prompt is decomposed into a fixed number of tokens (overheads, token-id inputs)
and the texts to encode (`PromptParts`); the encoding itself is an engine's work
(`batchline.engines.tokenization`), behind the `TextCounter` and `TokenCountingPool` ports here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

PromptParts = tuple[int, list[str]]  # (tokens known without encoding, texts still to encode)


class TextCounter(Protocol):
    """Counts the tokens of texts under one encoding, exactly."""

    @property
    def encoding(self) -> str: ...

    def text(self, text: str) -> int: ...

    def count_texts(self, texts: Sequence[str]) -> int: ...


# An encoding's name to its counter (one counter per encoding, shared).
TextCounters = Callable[[str], TextCounter]


class PendingCounts(Protocol):
    """The counts of one submitted block: call it for them (it waits if need be)."""

    def ready(self) -> bool: ...

    def __call__(self) -> list[int]: ...


class TokenCountingPool(Protocol):
    """Counts the texts of many prompts in the background, a block at a time."""

    def submit(self, jobs: Sequence[tuple[Any, list[str]]]) -> PendingCounts:
        """Start counting each (counter, texts) job; call the result for the counts, in job order.

        Each counter is a TextCounter of the pool's own engine (it reads the counter's caches),
        hence `Any` here: the domain only passes on the counters the wiring gave it.
        """
        ...

    def counter_for(self, encoding: str) -> TextCounter: ...


def _value_texts(value: Any, texts: list[str]) -> int:
    """Append the texts a message field is tokenised as; return tokens known without encoding."""
    if type(value) is str:
        texts.append(value)
    elif type(value) is list:
        # Content parts: only text is tokenised; images and audio are priced separately.
        for part in value:
            if type(part) is dict:
                text = part.get("text")
                if type(text) is str:
                    texts.append(text)
            elif type(part) is str:
                texts.append(part)
    elif value is not None:
        # Structured fields (tool_calls, function_call) reach the model as JSON text.
        texts.append(orjson.dumps(value).decode())
    return 0


def _message_parts(messages: list[Any], texts: list[str]) -> int:
    fixed = REPLY_PRIMING_TOKENS
    for message in messages:
        fixed += TOKENS_PER_MESSAGE
        if type(message) is not dict:
            continue
        for key, value in message.items():
            if type(value) is str:
                texts.append(value)
            else:
                _value_texts(value, texts)
            if key == "name":
                fixed += TOKENS_PER_NAME
    return fixed


def _input_parts(value: Any, texts: list[str]) -> int:
    """Embedding, moderation and completion inputs: a string, or a list of strings or token ids."""
    if type(value) is str:
        texts.append(value)
        return 0
    if type(value) is not list:
        return 0
    if value and all(type(v) is int for v in value):
        return len(value)
    fixed = 0
    for item in value:
        if type(item) is str:
            texts.append(item)
        elif type(item) is list:
            if all(type(v) is int for v in item):
                fixed += len(item)
            else:
                _value_texts(item, texts)
        elif type(item) is dict:
            _value_texts([item], texts)
    return fixed


def prompt_parts(url: str, body: dict[str, Any]) -> PromptParts:
    texts: list[str] = []
    fixed = 0
    if url == "/v1/chat/completions":
        messages = body.get("messages")
        if type(messages) is list:
            fixed = _message_parts(messages, texts)
    elif url == "/v1/responses":
        instructions = body.get("instructions")
        if type(instructions) is str:
            texts.append(instructions)
        value = body.get("input")
        if type(value) is str:
            texts.append(value)
        elif type(value) is list:
            fixed = _message_parts(value, texts)
    elif url in ("/v1/embeddings", "/v1/moderations"):
        fixed = _input_parts(body.get("input"), texts)
    elif url == "/v1/completions":
        fixed = _input_parts(body.get("prompt"), texts)
    return fixed, texts


def max_output_tokens(url: str, body: dict[str, Any], assumed: int) -> int:
    """The output tokens a request may produce: its own cap, else the assumption from settings."""
    if url in ("/v1/embeddings", "/v1/moderations"):
        return 0
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if type(value) is int and value >= 0:
            return value
    if url == "/v1/completions":
        return 16  # the completions endpoint's own default
    return assumed
