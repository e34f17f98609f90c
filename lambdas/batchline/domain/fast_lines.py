"""The fast path of line validation: typed decoding in C for the common shapes of request.

Most lines of a large job share a handful of shapes (a chat with string messages, an embedding
of strings, a responses call with a string input). msgspec decodes and checks those in one C
pass, several times faster than parsing to dicts and checking in Python, which is what lets the
planner keep up with tiktoken. Anything outside these shapes, and every line with a problem,
returns None and takes the general path, which alone decides error codes and messages, so both
paths accept exactly the same lines and count exactly the same tokens. The known parameters'
types and ranges come from the same table the general path checks (`parameters.PARAMETERS`); what
depends on the model (its endpoints, its output cap) is left to the caller, who knows the model.

The envelope and its body are one tagged union on ``url``, so a line is decoded in a single pass
whatever its endpoint. The structs are not tracked by the garbage collector (``gc=False``): they
hold only strings, numbers and lists of each other, so they can never be part of a cycle, and a
million short-lived tracked objects would otherwise trigger collections that cost as much as the
decoding itself.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from batchline.domain.json_depth import may_nest_too_deep
from batchline.domain.parameters import PARAMETERS, msgspec_type, output_budget
from batchline.domain.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, TOKENS_PER_NAME

NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Role
    content: str | UnsetType = UNSET
    name: str | UnsetType = UNSET


def _body(name: str, url: str, *inputs: tuple[Any, ...]) -> type:
    """The body struct of one endpoint: the model, its inputs (required) and its known parameters."""
    parameters = [(field, msgspec_type(rule), None) for field, rule in PARAMETERS[url].items()]
    return msgspec.defstruct(name, [("model", NonEmptyText), *inputs, *parameters], gc=False)


_Chat = _body("_Chat", "/v1/chat/completions", ("messages", Annotated[list[_Message], msgspec.Meta(min_length=1)]))
_Embeddings = _body(
    "_Embeddings",
    "/v1/embeddings",
    ("input", NonEmptyText | Annotated[list[NonEmptyText], msgspec.Meta(min_length=1, max_length=2048)]),
)
_Moderations = _body(
    "_Moderations", "/v1/moderations", ("input", NonEmptyText | Annotated[list[str], msgspec.Meta(min_length=1)])
)
_Completions = _body(
    "_Completions", "/v1/completions", ("prompt", NonEmptyText | Annotated[list[str], msgspec.Meta(min_length=1)])
)
_Responses = _body("_Responses", "/v1/responses", ("input", NonEmptyText), ("instructions", str | None, None))


class _Line(msgspec.Struct, tag_field="url", gc=False):
    custom_id: NonEmptyText
    method: Literal["POST"]


def _line(body: type, url: str) -> type:
    """The envelope of one endpoint's lines, tagged by its url, around that endpoint's body."""
    return msgspec.defstruct(f"{body.__name__}Line", [("body", body)], bases=(_Line,), tag=url, gc=False)


_ChatLine = _line(_Chat, "/v1/chat/completions")
_EmbeddingsLine = _line(_Embeddings, "/v1/embeddings")
_ModerationsLine = _line(_Moderations, "/v1/moderations")
_CompletionsLine = _line(_Completions, "/v1/completions")
_ResponsesLine = _line(_Responses, "/v1/responses")
# One tagged union of them all: a line is decoded in a single pass whatever its endpoint.
_decode: Callable[[bytes], Any] = msgspec.json.Decoder(
    functools.reduce(operator.or_, [_ChatLine, _EmbeddingsLine, _ModerationsLine, _CompletionsLine, _ResponsesLine])
).decode
# RecursionError too, though the depth check before decoding should leave msgspec nothing that deep.
_DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)

FastLine = tuple[str, str, str, int, list[str], int, int | None, int | None]


def fast_parse(raw: bytes, assumed_output_tokens: int) -> FastLine | None:
    """(custom_id, url, model, fixed_tokens, texts, output tokens to budget, the output cap the line
    sets or None, embeddings' dimensions or None), or None for the general path."""
    if may_nest_too_deep(raw):
        return None
    try:
        line = _decode(raw)
    except _DecodeErrors:
        return None
    body = line.body
    kind = type(line)
    if kind is _ChatLine:
        if body.top_logprobs is not None and body.logprobs is not True:
            return None
        messages = body.messages
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
        cap = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        budget = output_budget(cap, assumed_output_tokens, body.n)
        return line.custom_id, "/v1/chat/completions", body.model, fixed, texts, budget, cap, None
    if kind is _ResponsesLine:
        texts = [body.input] if body.instructions is None else [body.instructions, body.input]
        cap = body.max_output_tokens
        return (
            line.custom_id,
            "/v1/responses",
            body.model,
            0,
            texts,
            output_budget(cap, assumed_output_tokens),
            cap,
            None,
        )
    if kind is _EmbeddingsLine:
        value = body.input
        texts = [value] if type(value) is str else list(value)
        return line.custom_id, "/v1/embeddings", body.model, 0, texts, 0, None, body.dimensions
    if kind is _ModerationsLine:
        value = body.input
        texts = [value] if type(value) is str else list(value)
        return line.custom_id, "/v1/moderations", body.model, 0, texts, 0, None, None
    value = body.prompt
    texts = [value] if type(value) is str else list(value)
    cap = body.max_tokens
    budget = output_budget(cap, 16, body.n, body.best_of, len(texts))  # 16: the endpoint's own default
    return line.custom_id, "/v1/completions", body.model, 0, texts, budget, cap, None
