"""The emulator's token counts, straight from tiktoken: what OpenAI puts in ``usage`` and bills.

Written apart from batchline's own counter (lambdas/batchline/domain/tokens.py, with its caches
and helper process) on purpose: the emulator plays OpenAI, so a mistake in batchline's counting
shows up as a mismatch between the job's accounting and the emulator's ledger. Plain and slow is
fine here; one request is counted at a time.

Chat messages follow OpenAI's published rule for the gpt-3.5/gpt-4/gpt-4o families: 3 tokens per
message, 1 more for a ``name``, 3 to prime the reply. Text is encoded as ordinary text, so a user
text that spells a special token counts as text, as the API counts it.
"""

from __future__ import annotations

import json
from typing import Any

import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# The endpoints that generate nothing, and the completions endpoint's own default cap.
_NO_OUTPUT_URLS = ("/v1/embeddings", "/v1/moderations")
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def text_tokens(text: str, encoding: str) -> int:
    """The tokens of ``text`` under the tiktoken encoding named ``encoding``."""
    return len(tiktoken.get_encoding(encoding).encode_ordinary(text))


def prompt_tokens(url: str, body: dict[str, Any], encoding: str) -> int:
    """The prompt tokens OpenAI counts for a request of ``body`` to ``url``."""
    count = _Count(encoding)
    if url == "/v1/chat/completions":
        messages = body.get("messages")
        if isinstance(messages, list):
            count.messages(messages)
    elif url == "/v1/responses":
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            count.text(instructions)
        value = body.get("input")
        if isinstance(value, str):
            count.text(value)
        elif isinstance(value, list):
            count.messages(value)
    elif url in _NO_OUTPUT_URLS:
        count.inputs(body.get("input"))
    elif url == "/v1/completions":
        count.inputs(body.get("prompt"))
    return count.tokens


def output_cap(url: str, body: dict[str, Any], default: int) -> int:
    """The most output tokens the request lets the model produce: its own limit, else ``default``."""
    if url in _NO_OUTPUT_URLS:
        return 0
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    if url == "/v1/completions":
        return _COMPLETIONS_DEFAULT_MAX_TOKENS
    return default


class _Count:
    """A running total over the parts of one prompt."""

    def __init__(self, encoding: str) -> None:
        self._encode = tiktoken.get_encoding(encoding).encode_ordinary
        self.tokens = 0

    def text(self, text: str) -> None:
        self.tokens += len(self._encode(text))

    def messages(self, messages: list[Any]) -> None:
        """Chat messages (or Responses input items): every field's text, plus the rule's overheads."""
        self.tokens += REPLY_PRIMING_TOKENS
        for message in messages:
            self.tokens += TOKENS_PER_MESSAGE
            if not isinstance(message, dict):
                continue
            for key, value in message.items():
                self.field(value)
                if key == "name":
                    self.tokens += TOKENS_PER_NAME

    def field(self, value: Any) -> None:
        """A message field: text; content parts, of which only text is tokenised (images and audio are
        priced apart); any other value (tool_calls, function_call) as the JSON text the model reads."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list):
            for part in value:
                if isinstance(part, str):
                    self.text(part)
                elif isinstance(part, dict) and isinstance(part.get("text"), str):
                    self.text(part["text"])
        elif value is not None:
            self.text(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def inputs(self, value: Any) -> None:
        """Embedding, moderation and completion inputs: a string, token ids, or a list of either."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list):
            if value and all(_is_token_id(item) for item in value):
                self.tokens += len(value)
                return
            for item in value:
                if isinstance(item, str):
                    self.text(item)
                elif isinstance(item, list) and all(_is_token_id(token) for token in item):
                    self.tokens += len(item)
                elif isinstance(item, list | dict):
                    self.field(item if isinstance(item, list) else [item])


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
