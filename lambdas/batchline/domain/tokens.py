"""Exact prompt-token counts, the way OpenAI bills them.

Chat messages follow OpenAI's published counting rule for the gpt-3.5/gpt-4/gpt-4o families:
3 tokens of overhead per message, 1 more when a message carries a ``name``, and 3 for the
primed reply. Text is encoded with tiktoken's ``encode_ordinary`` so that user text that happens
to spell a special token is counted as text, as the API does, instead of raising.

A prompt is first decomposed into a fixed number of tokens (overheads, token-id inputs) and the
texts to encode (`PromptParts`). Encoding is the expensive part, and tiktoken releases the GIL
while it encodes, so the planner counts the texts of many requests at once on a few threads
(`TokenCounter.count_texts_parallel`) while it parses the next lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import orjson
import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# Roles, names and shared system prompts repeat across millions of requests; remembering the
# first few thousand distinct short strings saves most of their encoding.
_CACHE_ENTRIES = 8192
_CACHE_MAX_CHARS = 4096

PromptParts = tuple[int, list[str]]  # (tokens known without encoding, texts still to encode)


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


# tiktoken encodes the text on each side of an allowed special token on its own, so joining many
# texts with it and encoding once gives each text's exact count, in one call into Rust.
SEPARATOR = "<|endoftext|>"


class TokenCounter:
    """Counts tokens for one tiktoken encoding."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._tiktoken = tiktoken.get_encoding(encoding)
        self._encode = self._tiktoken.encode_ordinary
        self._separator_id = self._tiktoken.encode_single_token(SEPARATOR)
        self._cache: dict[str, int] = {}

    def text(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        count = len(self._encode(text))
        self._remember(text, count)
        return count

    def _remember(self, text: str, count: int) -> None:
        if len(self._cache) < _CACHE_ENTRIES and len(text) <= _CACHE_MAX_CHARS:
            self._cache[text] = count

    def cached(self, text: str) -> int | None:
        return self._cache.get(text)

    def count_texts(self, texts: Sequence[str]) -> int:
        text = self.text
        return sum(text(t) for t in texts)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Each text's count, from a single encode call (the GIL is taken once, not once per text)."""
        if not texts:
            return []
        joined = SEPARATOR.join(texts)
        if joined.count(SEPARATOR) != len(texts) - 1:
            # Some text itself spells the separator: count them one by one, as plain text.
            return [len(self._encode(t)) for t in texts]
        tokens = self._tiktoken.encode(joined, allowed_special={SEPARATOR}, disallowed_special=())
        counts: list[int] = []
        find = tokens.index
        start = 0
        separator = self._separator_id
        for _ in range(len(texts) - 1):
            end = find(separator, start)
            counts.append(end - start)
            start = end + 1
        counts.append(len(tokens) - start)
        for text, count in zip(texts, counts, strict=True):
            self._remember(text, count)
        return counts

    def prompt_tokens(self, url: str, body: dict[str, Any]) -> int:
        fixed, texts = prompt_parts(url, body)
        return fixed + self.count_texts(texts)


@cache
def token_counter(encoding: str) -> TokenCounter:
    return TokenCounter(encoding)


class ParallelTokenCounter:
    """Counts the texts of many prompts on background threads while the caller parses on.

    tiktoken encodes without the GIL; each block's uncached texts go to it in one call per
    encoding, so the counting threads barely contend with the parsing thread for the GIL.
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokens")

    def submit(self, jobs: Sequence[tuple[TokenCounter, list[str]]]) -> Callable[[], list[int]]:
        """Start counting each (counter, texts) job in the background; call the result for the counts."""
        step = max(64, -(-len(jobs) // self._threads))
        futures = [self._pool.submit(_count_slice, jobs[start : start + step]) for start in range(0, len(jobs), step)]

        def result() -> list[int]:
            counts: list[int] = []
            for future in futures:
                counts.extend(future.result())
            return counts

        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _count_slice(jobs: Sequence[tuple[TokenCounter, list[str]]]) -> list[int]:
    totals = [0] * len(jobs)
    misses: dict[TokenCounter, tuple[list[int], list[str]]] = {}
    for index, (counter, texts) in enumerate(jobs):
        cached = counter.cached
        total = 0
        for text in texts:
            count = cached(text)
            if count is None:
                owners, pending = misses.setdefault(counter, ([], []))
                owners.append(index)
                pending.append(text)
            else:
                total += count
        totals[index] = total
    for counter, (owners, pending) in misses.items():
        for index, count in zip(owners, counter.count_many(pending), strict=True):
            totals[index] += count
    return totals


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
