"""Helpers shared by the emulator tests: build input files, drive batches, count tokens independently.

Token counts in the assertions are computed here straight from tiktoken with OpenAI's published
chat rule, independently of batchline's own counter, so a wrong count on either side shows up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import tiktoken

from batchline_local.emulator import EmulatorServer

FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})


class ManualClock:
    """A clock a test moves by hand, to stop a batch at an exact point of its timeline."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sdk_client(server: EmulatorServer) -> openai.OpenAI:
    # No retries: a refusal must surface at once as the exception class the SDK maps it to.
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=10)


def jsonl(lines: list[Any]) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def chat_line(
    custom_id: str, content: str, *, model: str = "gpt-4o-mini", max_tokens: int | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body, **extra}


def upload(client: openai.OpenAI, lines: list[Any] | bytes, *, purpose: str = "batch") -> str:
    content = lines if isinstance(lines, bytes) else jsonl(lines)
    return client.files.create(file=("input.jsonl", content), purpose=purpose).id


def start_batch(client: openai.OpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions", **kwargs: Any):
    return client.batches.create(
        input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h", **kwargs
    )


def wait_for_batch(client: openai.OpenAI, batch_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in FINISHED:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout}s")
        time.sleep(0.02)


def read_jsonl(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line]


def tiktoken_chat_prompt_tokens(messages: list[dict[str, str]], encoding: str) -> int:
    """OpenAI's published rule: 3 per message, 1 per name, 3 to prime the reply."""
    encode = tiktoken.get_encoding(encoding).encode
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encode(value))
            if key == "name":
                total += 1
    return total


def tiktoken_text_tokens(text: str, encoding: str) -> int:
    return len(tiktoken.get_encoding(encoding).encode(text))
