"""The fast path of line validation: typed decoding in C for the common shapes of request.

Most lines of a large job share a handful of shapes (a chat with string messages, an embedding
of strings, a responses call with a string input). msgspec decodes and checks those in one C
pass, several times faster than parsing to dicts and checking in Python, which is what lets the
planner keep up with tiktoken. Anything outside these shapes, and every line with a problem,
returns None and takes the general path, which alone decides error codes and messages, so both
paths accept exactly the same lines and count exactly the same tokens.

The envelope and its body are one tagged union on ``url``, so a line is decoded in a single pass
whatever its endpoint. The structs are not tracked by the garbage collector (``gc=False``): they
hold only strings, numbers and lists of each other, so they can never be part of a cycle, and a
million short-lived tracked objects would otherwise trigger collections that cost as much as the
decoding itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from batchline.domain.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TOKENS_PER_NAME

NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]
TextOrTexts = NonEmptyText | Annotated[list[str], msgspec.Meta(min_length=1)]


class _Caps(msgspec.Struct, gc=False):
    """Output caps, read the same way as `tokens.max_output_tokens` reads them."""

    model: NonEmptyText
    max_completion_tokens: Count | UnsetType = UNSET
    max_output_tokens: Count | UnsetType = UNSET
    max_tokens: Count | UnsetType = UNSET


class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: str
    content: str | UnsetType = UNSET
    name: str | UnsetType = UNSET


class _Chat(_Caps, gc=False):
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)] = []


class _Inputs(_Caps, gc=False):
    input: TextOrTexts = ""


class _Prompt(_Caps, gc=False):
    prompt: TextOrTexts = ""


class _Responses(_Caps, gc=False):
    input: NonEmptyText = ""
    instructions: str | UnsetType = UNSET


class _Line(msgspec.Struct, tag_field="url", gc=False):
    custom_id: NonEmptyText
    method: Literal["POST"]


class _ChatLine(_Line, tag="/v1/chat/completions", gc=False):
    body: _Chat


class _EmbeddingsLine(_Line, tag="/v1/embeddings", gc=False):
    body: _Inputs


class _ModerationsLine(_Line, tag="/v1/moderations", gc=False):
    body: _Inputs


class _CompletionsLine(_Line, tag="/v1/completions", gc=False):
    body: _Prompt


class _ResponsesLine(_Line, tag="/v1/responses", gc=False):
    body: _Responses


_decode = msgspec.json.Decoder(
    _ChatLine | _EmbeddingsLine | _ModerationsLine | _CompletionsLine | _ResponsesLine
).decode
_DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)


def fast_parse(raw: bytes, assumed_output_tokens: int):
    """(custom_id, url, model, fixed_tokens, texts, max_output_tokens), or None for the general path."""
    try:
        line = _decode(raw)
    except _DecodeErrors:
        return None
    body = line.body
    kind = type(line)
    if kind is _ChatLine:
        messages = body.messages
        if not messages:  # absent: the default skips min_length
            return None
        fixed = REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE * len(messages)
        texts: list[str] = []
        append = texts.append
        for message in messages:
            append(message.role)
            if message.content is not UNSET:
                append(message.content)
            if message.name is not UNSET:
                append(message.name)
                fixed += TOKENS_PER_NAME
        url = "/v1/chat/completions"
    elif kind is _ResponsesLine:
        if not body.input:
            return None
        fixed = 0
        texts = [body.input] if body.instructions is UNSET else [body.instructions, body.input]
        url = "/v1/responses"
    else:
        value = body.prompt if kind is _CompletionsLine else body.input
        if not value:
            return None
        fixed = 0
        texts = [value] if type(value) is str else list(value)
        if kind is _EmbeddingsLine:
            return line.custom_id, "/v1/embeddings", body.model, 0, texts, 0
        if kind is _ModerationsLine:
            return line.custom_id, "/v1/moderations", body.model, 0, texts, 0
        url = "/v1/completions"
    if body.max_completion_tokens is not UNSET:
        cap = body.max_completion_tokens
    elif body.max_output_tokens is not UNSET:
        cap = body.max_output_tokens
    elif body.max_tokens is not UNSET:
        cap = body.max_tokens
    else:
        cap = 16 if kind is _CompletionsLine else assumed_output_tokens
    return line.custom_id, url, body.model, fixed, texts, cap
