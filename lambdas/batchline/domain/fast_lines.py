"""The fast path of line validation: typed decoding in C for the common shapes of request.

Most lines of a large job share a handful of shapes (a chat with string messages, an embedding
of strings, a responses call with a string input). msgspec decodes and checks those in one C
pass, about five times faster than parsing to dicts and checking in Python, which is what lets
the planner keep up with tiktoken. Anything outside these shapes, and every line with a problem,
returns None and takes the general path, which alone decides error codes and messages, so both
paths accept exactly the same lines and count exactly the same tokens.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from batchline.domain.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TOKENS_PER_NAME

NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]
TextOrTexts = NonEmptyText | Annotated[list[str], msgspec.Meta(min_length=1)]


class _Envelope(msgspec.Struct):
    custom_id: NonEmptyText
    method: Literal["POST"]
    url: Literal["/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/completions", "/v1/moderations"]
    body: msgspec.Raw


class _Caps(msgspec.Struct):
    """Output caps, read the same way as `tokens.max_output_tokens` reads them."""

    model: NonEmptyText
    max_completion_tokens: Count | UnsetType = UNSET
    max_output_tokens: Count | UnsetType = UNSET
    max_tokens: Count | UnsetType = UNSET


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str | UnsetType = UNSET
    name: str | UnsetType = UNSET


class _Chat(_Caps):
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)] = []


class _Inputs(_Caps):
    input: TextOrTexts = ""


class _Prompt(_Caps):
    prompt: TextOrTexts = ""


class _Responses(_Caps):
    input: NonEmptyText = ""
    instructions: str | UnsetType = UNSET


_envelope = msgspec.json.Decoder(_Envelope)
_bodies = {
    "/v1/chat/completions": msgspec.json.Decoder(_Chat),
    "/v1/embeddings": msgspec.json.Decoder(_Inputs),
    "/v1/moderations": msgspec.json.Decoder(_Inputs),
    "/v1/completions": msgspec.json.Decoder(_Prompt),
    "/v1/responses": msgspec.json.Decoder(_Responses),
}
_NO_OUTPUT = frozenset(("/v1/embeddings", "/v1/moderations"))


def fast_parse(raw: bytes, assumed_output_tokens: int):
    """(custom_id, url, model, fixed_tokens, texts, max_output_tokens), or None for the general path."""
    try:
        envelope = _envelope.decode(raw)
        url = envelope.url
        body = _bodies[url].decode(envelope.body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    texts: list[str] = []
    fixed = 0
    if url == "/v1/chat/completions":
        if not body.messages:
            return None
        fixed = REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE * len(body.messages)
        append = texts.append
        for message in body.messages:
            append(message.role)
            if message.content is not UNSET:
                append(message.content)
            if message.name is not UNSET:
                append(message.name)
                fixed += TOKENS_PER_NAME
    elif url == "/v1/responses":
        if not body.input:
            return None
        if body.instructions is not UNSET:
            texts.append(body.instructions)
        texts.append(body.input)
    else:
        value = body.prompt if url == "/v1/completions" else body.input
        if not value:
            return None
        if type(value) is str:
            texts.append(value)
        else:
            texts.extend(value)
    if url in _NO_OUTPUT:
        cap = 0
    elif body.max_completion_tokens is not UNSET:
        cap = body.max_completion_tokens
    elif body.max_output_tokens is not UNSET:
        cap = body.max_output_tokens
    elif body.max_tokens is not UNSET:
        cap = body.max_tokens
    else:
        cap = 16 if url == "/v1/completions" else assumed_output_tokens
    return envelope.custom_id, url, body.model, fixed, texts, cap
