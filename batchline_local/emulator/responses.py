"""The body a model endpoint returns for one request, shared by the batch and the realtime paths.

Sharing one function is the point: a request gives the same content and the same usage whether it
went through a batch or straight to the endpoint, so tests can compare the two paths. Content is
derived from a hash of the request body (same body, same answer), its length is capped by the
request's own token limit, and usage is counted straight from tiktoken (token_counts.py), apart
from batchline's own counter, so a mistake in batchline's cost accounting shows up as a mismatch
against the emulator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import sys
import uuid
from array import array
from dataclasses import dataclass
from typing import Any

import tiktoken
from batchline.catalog import ModelKind, ModelLimits

from .errors import InvalidRequest
from .structured import OutputFormat, chat_format, json_answer, off_schema_answer, responses_format
from .token_counts import output_cap, prompt_tokens, text_tokens

# Generated answers are at most this many tokens long, so fast runs stay fast.
MAX_GENERATED_TOKENS = 40
# The length of a vector from an embedding model the model table does not know (ada-002's and 3-small's).
DEFAULT_EMBEDDING_DIMENSIONS = 1536
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"

# Every word is a single token under both o200k_base and cl100k_base, so an answer of n words
# is n tokens long and the cap from max_tokens holds without guessing.
_VOCABULARY = (
    "alpha answer batch bright calm clear cloud data delta early field forest garden given green harbor "
    "light long market morning north open paper plain quiet rapid river road round simple small steady "
    "stone summer table token travel valley water window winter world yellow"
).split()

_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


@dataclass(frozen=True)
class Execution:
    """What one executed request produced and what it is billed for."""

    model: str
    body: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int


def respond(
    url: str,
    body: dict[str, Any],
    *,
    encoding: str,
    now: float,
    limits: ModelLimits | None = None,
    schema_invalid: bool = False,
) -> Execution:
    """Execute one request to ``url``; raise InvalidRequest where the real endpoint answers 400.

    ``limits`` are the model's entry in the model table (None for a model it does not know): an
    embedding model's vector length and whether it takes ``dimensions`` come from there.
    ``schema_invalid``: an answer asked to follow a JSON Schema does not (the fault of that name)."""
    if url not in _BUILDERS:
        raise InvalidRequest(f"Invalid URL (POST {url})", param="url", code="invalid_url")
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    if body.get("stream") is True:
        raise InvalidRequest(
            "Streaming is not supported by the batchline emulator.", param="stream", code="unsupported_value"
        )
    if url == "/v1/moderations":
        body = {"model": DEFAULT_MODERATION_MODEL, **body}
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    builder = _BUILDERS[url]
    context = _Context(
        url=url, body=body, encoding=encoding, created=int(now), limits=limits, schema_invalid=schema_invalid
    )
    return builder(body, model, context)


@dataclass(frozen=True)
class _Context:
    url: str
    body: dict[str, Any]
    encoding: str
    created: int
    limits: ModelLimits | None = None
    schema_invalid: bool = False

    def prompt_tokens(self) -> int:
        return prompt_tokens(self.url, self.body, self.encoding)

    def tokens(self, text: str) -> int:
        return text_tokens(text, self.encoding)

    def seed(self, *salt: object) -> int:
        """A number fixed by the request body (and a salt), so the same request gets the same answer."""
        canonical = json.dumps([self.body, *salt], sort_keys=True, separators=(",", ":"), default=str)
        return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")

    def generate(self, *salt: object) -> tuple[str, int, str]:
        """Deterministic text, its real token count, and the finish reason the API would give."""
        seed = self.seed("text", *salt)
        natural_length = 1 + seed % MAX_GENERATED_TOKENS
        cap = output_cap(self.url, self.body, MAX_GENERATED_TOKENS)
        target = min(natural_length, cap)
        picks = hashlib.shake_256(seed.to_bytes(8, "big")).digest(target) if target else b""
        words = [_VOCABULARY[pick % len(_VOCABULARY)] for pick in picks]
        text = " ".join(words).capitalize()
        tokens = self.tokens(text)
        while tokens > target and words:  # never exceed the cap, whatever the tokenizer does
            words.pop()
            text = " ".join(words).capitalize()
            tokens = self.tokens(text)
        return text, tokens, "length" if cap < natural_length else "stop"

    def answer(self, fmt: OutputFormat | None, *salt: object) -> tuple[str, int, str]:
        """The answer in the format asked for: plain text, or JSON cut at the request's cap as OpenAI cuts it."""
        if fmt is None:
            return self.generate(*salt)
        if self.schema_invalid and fmt.schema is not None:
            text = off_schema_answer(fmt, self.seed("json", *salt))
        else:
            text = json_answer(fmt, self.seed("json", *salt))
        tokens = self.tokens(text)
        cap = output_cap(self.url, self.body, sys.maxsize)
        if tokens <= cap:
            return text, tokens, "stop"
        encoding = tiktoken.get_encoding(self.encoding)
        kept = encoding.encode_ordinary(text)[:cap]
        while kept:
            text = encoding.decode(kept)
            tokens = self.tokens(text)
            if tokens <= cap:
                return text, tokens, "length"
            kept.pop()
        return "", 0, "length"


def _require(body: dict[str, Any], field: str) -> Any:
    value = body.get(field)
    if value is None or value == "" or value == []:
        raise InvalidRequest(f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter")
    return value


def _short_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _chat_completion(body: dict[str, Any], model: str, ctx: _Context) -> Execution:
    messages = _require(body, "messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array.", param="messages", code="invalid_type")
    fmt = chat_format(body)
    choice_count = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 0 else 1
    choices, completion_tokens = [], 0
    for index in range(choice_count):
        text, tokens, finish_reason = ctx.answer(fmt, index)
        completion_tokens += tokens
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        )
    prompt_tokens = ctx.prompt_tokens()
    return Execution(
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        body={
            "id": _short_id("chatcmpl-"),
            "object": "chat.completion",
            "created": ctx.created,
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_batchline_emulator",
        },
    )


def _text_completion(body: dict[str, Any], model: str, ctx: _Context) -> Execution:
    prompt = _require(body, "prompt")
    prompts = prompt if isinstance(prompt, list) and not all(isinstance(p, int) for p in prompt) else [prompt]
    choices, completion_tokens = [], 0
    for index in range(len(prompts)):
        text, tokens, finish_reason = ctx.generate(index)
        completion_tokens += tokens
        choices.append({"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason})
    prompt_tokens = ctx.prompt_tokens()
    return Execution(
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        body={
            "id": _short_id("cmpl-"),
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def _embedding_inputs(value: Any) -> list[Any]:
    """One embedding per input: a string, a token-id array, or a list of either."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        return list(value)
    raise InvalidRequest(
        "'input' must be a string, an array of strings, or an array of token arrays.",
        param="input",
        code="invalid_type",
    )


def _vector(model: str, item: Any, native: int, dimensions: int) -> array:
    """A unit vector fixed by the model and the input, so equal inputs embed equally, in float32.

    A shortened embedding is the model's full vector cut to ``dimensions`` and scaled back to unit
    length, as OpenAI documents for the v3 models' ``dimensions``."""
    seed = hashlib.sha256(json.dumps([model, item], separators=(",", ":")).encode()).digest()
    draws = struct.unpack(f"<{native}I", hashlib.shake_256(seed).digest(4 * native))[:dimensions]
    raw = [draw / 2**31 - 1.0 for draw in draws]
    norm = math.sqrt(math.fsum(v * v for v in raw)) or 1.0
    # float32, as the API sends them: the float and base64 encodings then carry the same numbers.
    return array("f", [v / norm for v in raw])


def _dimensions(body: dict[str, Any], model: str, limits: ModelLimits | None) -> tuple[int, int]:
    """(the model's own vector length, the length asked for); a 400 where OpenAI refuses ``dimensions``."""
    known = limits if limits is not None and limits.kind is ModelKind.EMBEDDING and limits.dimensions else None
    native = known.dimensions if known else DEFAULT_EMBEDDING_DIMENSIONS
    most = known.max_dimensions if known else native
    requested = body.get("dimensions")
    if requested is None:
        return native, native
    if type(requested) is not int:
        raise InvalidRequest(
            f"Invalid type for 'dimensions': expected an integer, but got {type(requested).__name__} instead.",
            param="dimensions",
            code="invalid_type",
        )
    if not most:
        raise InvalidRequest(
            f"This model does not support specifying dimensions ({model} always returns {native}).",
            param="dimensions",
            code="unsupported_parameter",
        )
    if requested < 1:
        raise InvalidRequest(
            f"Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got {requested} instead.",
            param="dimensions",
            code="integer_below_min_value",
        )
    if requested > most:
        raise InvalidRequest(
            f"Invalid 'dimensions': integer above maximum value. Expected a value <= {most} for {model}, "
            f"but got {requested} instead.",
            param="dimensions",
            code="integer_above_max_value",
        )
    return native, requested


def _base64(vector: array) -> str:
    """The vector as the API's base64: little-endian float32."""
    if sys.byteorder != "little":
        vector = array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode()


def _decimals(vector: array) -> list[float]:
    """The float32 numbers in 9 significant digits, as the API writes them: each reads back as the same
    float32, and a vector of 1,536 takes about 20 KB of JSON instead of 30."""
    return [float(f"{value:.9g}") for value in vector.tolist()]


def _embeddings(body: dict[str, Any], model: str, ctx: _Context) -> Execution:
    items = _embedding_inputs(_require(body, "input"))
    native, dimensions = _dimensions(body, model, ctx.limits)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector = _vector(model, item, native, dimensions)
        encoded: Any = _base64(vector) if as_base64 else _decimals(vector)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    prompt_tokens = ctx.prompt_tokens()
    return Execution(
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=0,
        body={
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        },
    )


def _responses(body: dict[str, Any], model: str, ctx: _Context) -> Execution:
    input_value = _require(body, "input")
    if not isinstance(input_value, str | list):
        raise InvalidRequest("'input' must be a string or an array.", param="input", code="invalid_type")
    fmt = responses_format(body)
    text, output_tokens, finish_reason = ctx.answer(fmt)
    input_tokens = ctx.prompt_tokens()
    incomplete = finish_reason == "length"
    return Execution(
        model=model,
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        body={
            "id": _short_id("resp_"),
            "object": "response",
            "created_at": ctx.created,
            "status": "incomplete" if incomplete else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": _short_id("msg_"),
                    "status": "incomplete" if incomplete else "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "temperature": body.get("temperature", 1.0),
            "text": {"format": fmt.echo if fmt is not None else {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "metadata": body.get("metadata") or {},
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        },
    )


def _moderations(body: dict[str, Any], model: str, ctx: _Context) -> Execution:
    value = _require(body, "input")
    items = value if isinstance(value, list) and not all(isinstance(v, dict) for v in value) else [value]
    results = []
    for index in range(len(items)):
        rng = random.Random(ctx.seed("moderation", index))
        scores = {category: round(rng.uniform(0.0, 0.001), 6) for category in _MODERATION_CATEGORIES}
        results.append(
            {
                "flagged": False,
                "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
                "category_scores": scores,
                "category_applied_input_types": {category: ["text"] for category in _MODERATION_CATEGORIES},
            }
        )
    return Execution(
        model=model,
        prompt_tokens=ctx.prompt_tokens(),
        completion_tokens=0,
        body={"id": _short_id("modr-"), "model": model, "results": results},
    )


_BUILDERS = {
    "/v1/chat/completions": _chat_completion,
    "/v1/completions": _text_completion,
    "/v1/embeddings": _embeddings,
    "/v1/responses": _responses,
    "/v1/moderations": _moderations,
}
