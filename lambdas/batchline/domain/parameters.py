"""The request parameters each endpoint knows, with the types and ranges the provider enforces.

One table serves both validation paths: the general path checks a parsed body against it
(`parameter_problem`), and the fast path builds its msgspec types from it (`msgspec_type`), so a
line the one accepts the other accepts too. Figures are those of OpenAI's API reference
(openai-openapi's openapi.yaml): temperature 0..2, top_p 0..1, penalties -2..2, n 1..128,
top_logprobs 0..20, completions' logprobs 0..5 and best_of 0..20, up to 4 stop sequences,
metadata of at most 16 string pairs (keys up to 64 characters, values up to 512), logit_bias
values -100..100, embeddings' encoding_format float or base64 and dimensions >= 1. The output caps
are integers of at least 1 (16 for the responses endpoint's max_output_tokens, 0 for the legacy
completions' max_tokens) and at most the model's own cap (`model_limits`).

A null value means the parameter is absent, as the API treats it. Parameters not in the table
are passed on unchecked: the provider adds parameters faster than any table follows, and
refusing a new one here would refuse a request the provider accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, final

import msgspec
import orjson

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@final
@dataclass(frozen=True, slots=True)
class Integer:
    low: int
    high: int = INT64_MAX  # JSON integers beyond int64 come out of orjson as floats: refused alike


@final
@dataclass(frozen=True, slots=True)
class Number:
    low: float
    high: float


@final
@dataclass(frozen=True, slots=True)
class Boolean:
    pass


@final
@dataclass(frozen=True, slots=True)
class OneOf:
    values: tuple[str, ...]


@final
@dataclass(frozen=True, slots=True)
class StopSequences:
    most: int = 4


@final
@dataclass(frozen=True, slots=True)
class Metadata:
    entries: int = 16
    key_chars: int = 64
    value_chars: int = 512


@final
@dataclass(frozen=True, slots=True)
class LogitBias:
    low: int = -100
    high: int = 100


Rule = Integer | Number | Boolean | OneOf | StopSequences | Metadata | LogitBias

_SAMPLING: dict[str, Rule] = {"temperature": Number(0, 2), "top_p": Number(0, 1)}
_PENALTIES: dict[str, Rule] = {"presence_penalty": Number(-2, 2), "frequency_penalty": Number(-2, 2)}
_SEED: dict[str, Rule] = {"seed": Integer(INT64_MIN, INT64_MAX)}

# The fields that cap a request's output, per endpoint, in the order the provider reads them.
OUTPUT_CAP_FIELDS: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/responses": ("max_output_tokens",),
    "/v1/completions": ("max_tokens",),
}

PARAMETERS: dict[str, dict[str, Rule]] = {
    "/v1/chat/completions": {
        "max_completion_tokens": Integer(1),
        "max_tokens": Integer(1),
        **_SAMPLING,
        **_PENALTIES,
        **_SEED,
        "n": Integer(1, 128),
        "logprobs": Boolean(),
        "top_logprobs": Integer(0, 20),
        "stop": StopSequences(),
        "metadata": Metadata(),
        "logit_bias": LogitBias(),
        "store": Boolean(),
        "parallel_tool_calls": Boolean(),
    },
    "/v1/responses": {
        "max_output_tokens": Integer(16),
        **_SAMPLING,
        "top_logprobs": Integer(0, 20),
        "metadata": Metadata(),
        "store": Boolean(),
        "parallel_tool_calls": Boolean(),
    },
    "/v1/completions": {
        "max_tokens": Integer(0),
        **_SAMPLING,
        **_PENALTIES,
        **_SEED,
        "n": Integer(1, 128),
        "best_of": Integer(0, 20),
        "logprobs": Integer(0, 5),
        "echo": Boolean(),
        "stop": StopSequences(),
        "logit_bias": LogitBias(),
    },
    "/v1/embeddings": {
        "dimensions": Integer(1),
        "encoding_format": OneOf(("float", "base64")),
    },
    "/v1/moderations": {},
}


def shown(value: Any) -> str:
    """A value as it reads in the JSON line, cut short."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _is_integer(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_number(value: Any, low: float, high: float) -> bool:
    return (type(value) is int or type(value) is float) and low <= value <= high


def describe(rule: Rule) -> str:
    """What a rule asks, as the end of "field 'body.x' must be ..."."""
    if type(rule) is Integer:
        if rule.high != INT64_MAX:
            return f"an integer between {rule.low} and {rule.high}"
        return "a 64-bit integer" if rule.low == INT64_MIN else f"an integer >= {rule.low}"
    if type(rule) is Number:
        return f"a number between {rule.low:g} and {rule.high:g}"
    if type(rule) is Boolean:
        return "true or false"
    if type(rule) is OneOf:
        return "one of " + ", ".join(f'"{value}"' for value in rule.values)
    if type(rule) is StopSequences:
        return f"a string or a list of 1 to {rule.most} strings"
    if type(rule) is Metadata:
        return (
            f"an object of at most {rule.entries} string values, keys of at most {rule.key_chars} characters "
            f"and values of at most {rule.value_chars}"
        )
    return f"an object of integers between {rule.low} and {rule.high}"


def accepts(rule: Rule, value: Any) -> bool:
    if type(rule) is Integer:
        return _is_integer(value, rule.low, rule.high)
    if type(rule) is Number:
        return _is_number(value, rule.low, rule.high)
    if type(rule) is Boolean:
        return type(value) is bool
    if type(rule) is OneOf:
        return value in rule.values and type(value) is str
    if type(rule) is StopSequences:
        if type(value) is str:
            return True
        return type(value) is list and 1 <= len(value) <= rule.most and all(type(item) is str for item in value)
    if type(rule) is Metadata:
        return (
            type(value) is dict
            and len(value) <= rule.entries
            and all(
                len(key) <= rule.key_chars and type(item) is str and len(item) <= rule.value_chars
                for key, item in value.items()
            )
        )
    return type(value) is dict and all(_is_integer(item, rule.low, rule.high) for item in value.values())


def parameter_problem(
    url: str, body: dict[str, Any], *, model: str, output_cap: int | None = None, dimensions: int | None = None
) -> tuple[str, str] | None:
    """The first known parameter of the body that the provider would refuse: (field, message).

    `output_cap` and `dimensions` are the model's own bounds where known: the output caps and
    embeddings' dimensions are then held to them, and the message names the model.
    """
    for name, rule in PARAMETERS[url].items():
        value = body.get(name)
        if value is None:
            continue
        bound = dimensions if name == "dimensions" else output_cap if name in OUTPUT_CAP_FIELDS.get(url, ()) else None
        if bound is not None and type(rule) is Integer:
            if bound < rule.low:
                return name, f"field 'body.{name}' is not accepted by {model}"
            rule = Integer(rule.low, bound)
        if not accepts(rule, value):
            for_model = f" for {model}" if bound is not None else ""
            return name, f"field 'body.{name}' must be {describe(rule)}{for_model}, got {shown(value)}"
    if url == "/v1/chat/completions" and body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        return "top_logprobs", "field 'body.top_logprobs' needs 'body.logprobs' set to true"
    return None


def msgspec_type(rule: Rule) -> Any:
    """The msgspec type that decodes exactly the values `accepts` takes (None standing for absent)."""
    if type(rule) is Integer:
        return Annotated[int, msgspec.Meta(ge=rule.low, le=rule.high)] | None
    if type(rule) is Number:
        return Annotated[float, msgspec.Meta(ge=rule.low, le=rule.high)] | None
    if type(rule) is Boolean:
        return bool | None
    if type(rule) is OneOf:
        return Literal[rule.values] | None
    if type(rule) is StopSequences:
        return str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=rule.most)] | None
    if type(rule) is Metadata:
        key = Annotated[str, msgspec.Meta(max_length=rule.key_chars)]
        value = Annotated[str, msgspec.Meta(max_length=rule.value_chars)]
        return Annotated[dict[key, value], msgspec.Meta(max_length=rule.entries)] | None
    return dict[str, Annotated[int, msgspec.Meta(ge=rule.low, le=rule.high)]] | None


def output_budget(
    cap: int | None, default: int, n: int | None = None, best_of: int | None = None, prompts: int = 1
) -> int:
    """The output tokens a request may be billed for: its cap (else the default) for each completion
    it asks for: `n` choices (the legacy endpoint generates `best_of` and bills them all), per prompt."""
    return (default if cap is None else cap) * max(n or 1, best_of or 1) * prompts
