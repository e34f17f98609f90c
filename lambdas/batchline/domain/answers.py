"""Structured answers: does an answer a request asked to follow a JSON Schema follow it?

A request asks for one with chat's ``response_format`` (``{"type": "json_schema", "json_schema":
{"name", "strict", "schema"}}``) or the responses endpoint's ``text.format`` (``{"type":
"json_schema", "name", "strict", "schema"}``). Strict mode makes the provider constrain its
decoding, yet an answer can still miss: cut at the output token cap, a refusal, a model or an
emulator that slips. Such an answer was billed but is no success: `check_answer` says which,
with the place and the reason in words a user can act on, so that the use cases can ask again
(the same route) and, once the attempts are used up, report it.

Validators are compiled once per schema (keyed by its digest) and kept in a small cache; a job
usually asks every request for the same schema, so checking an answer costs a JSON parse and one
validation.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from threading import Lock
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

CODE_SCHEMA_INVALID: Final = "schema_invalid"
CODE_REFUSAL: Final = "refusal"

CHAT: Final = "chat"  # response_format.json_schema, answer in choices[0].message.content
RESPONSES: Final = "responses"  # text.format, answer in the output's output_text items

_CACHE_SIZE = 256  # compiled validators kept; a job has one schema, a process a few
_SHOWN = 120  # characters of a value quoted in a message, at most


@dataclass(frozen=True, slots=True)
class AnswerSchema:
    """The schema a request asks its answer to follow, compiled; `digest` names it."""

    digest: str
    kind: str  # CHAT or RESPONSES: where the answer's text is
    name: str
    validator: Any  # a jsonschema validator (the library has no type hints)


@dataclass(frozen=True, slots=True)
class Parsed:
    """An answer that follows its schema, parsed."""

    value: Any


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """An answer that does not follow its schema (`schema_invalid`), or a refusal to give one (`refusal`).

    `retriable`: asking again may give a valid answer; a refusal is final.
    """

    code: str
    message: str

    @property
    def retriable(self) -> bool:
        return self.code == CODE_SCHEMA_INVALID


AnswerOutcome = Parsed | SchemaProblem


def requested_format(body: Any) -> tuple[str, Any] | None:
    """(kind, the json_schema format object) a request body asks for, or None when it asks for none."""
    if not isinstance(body, dict):
        return None
    chat = body.get("response_format")
    if isinstance(chat, dict) and chat.get("type") == "json_schema":
        spec = chat.get("json_schema")
        return (CHAT, spec) if isinstance(spec, dict) else None
    text = body.get("text")
    given = text.get("format") if isinstance(text, dict) else None
    if isinstance(given, dict) and given.get("type") == "json_schema":
        return RESPONSES, given
    return None


def schema_of(body: Any) -> AnswerSchema | None:
    """The compiled schema a request body asks its answer to follow, or None (plain text, json_object)."""
    found = requested_format(body)
    if found is None:
        return None
    kind, spec = found
    schema = spec.get("schema")
    if not isinstance(schema, dict | bool):
        return None  # the provider refuses such a request before it runs: nothing to check
    name = str(spec.get("name") or "")
    digest = hashlib.sha256(orjson.dumps([kind, name, schema], option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return _compiled(digest, kind, name, schema)


_compiled_cache: OrderedDict[str, AnswerSchema] = OrderedDict()
_cache_lock = Lock()  # the realtime worker checks answers on a pool of threads


def _compiled(digest: str, kind: str, name: str, schema: dict[str, Any] | bool) -> AnswerSchema:
    with _cache_lock:
        cached = _compiled_cache.get(digest)
        if cached is not None:
            _compiled_cache.move_to_end(digest)
            return cached
    validator_class: Any = Draft202012Validator
    compiled = AnswerSchema(digest=digest, kind=kind, name=name, validator=validator_class(schema))
    with _cache_lock:
        _compiled_cache[digest] = compiled
        while len(_compiled_cache) > _CACHE_SIZE:
            _compiled_cache.popitem(last=False)
    return compiled


def check_answer(schema: AnswerSchema, response: Any) -> AnswerOutcome:
    """Whether the provider's `response` body (a 200's) holds an answer that follows `schema`."""
    text, refusal, cut = _answer_text(schema.kind, response)
    if refusal is not None:
        return SchemaProblem(CODE_REFUSAL, f"the model refused to answer in schema {schema.name!r}: {refusal}")
    note = " (the answer was cut at the output token cap)" if cut else ""
    if text is None:
        return SchemaProblem(CODE_SCHEMA_INVALID, f"not JSON: the answer holds no text{note}")
    value, problem = _parse(text)
    if problem is not None:
        return SchemaProblem(CODE_SCHEMA_INVALID, f"not JSON: {problem}{note}")
    validator = schema.validator
    if validator.is_valid(value):
        return Parsed(value)
    error = best_match(validator.iter_errors(value))
    return SchemaProblem(CODE_SCHEMA_INVALID, f"{error.json_path}: {_short(error.message)}{note}")


def check_response(body: Any, response: Any) -> AnswerOutcome | None:
    """`check_answer` for a request body: None when the request asked for no schema."""
    schema = schema_of(body)
    return None if schema is None else check_answer(schema, response)


def _answer_text(kind: str, response: Any) -> tuple[str | None, str | None, bool]:
    """(the answer's text, a refusal's text, whether it was cut at the token cap) of a response body."""
    if not isinstance(response, dict):
        return None, None, False
    if kind == CHAT:
        choices = response.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            return None, None, False
        message = first.get("message")
        message = message if isinstance(message, dict) else {}
        refusal = message.get("refusal")
        content = message.get("content")
        return (
            content if isinstance(content, str) else None,
            str(refusal) if refusal else None,
            first.get("finish_reason") == "length",
        )
    parts: list[str] = []
    refusal_text: str | None = None
    for item in response.get("output") or ():
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        for content in item.get("content") or ():
            if not isinstance(content, dict):
                continue
            if content.get("type") == "output_text" and isinstance(content.get("text"), str):
                parts.append(content["text"])
            elif content.get("type") == "refusal" and content.get("refusal"):
                refusal_text = str(content["refusal"])
    details = response.get("incomplete_details")
    cut = isinstance(details, dict) and details.get("reason") == "max_output_tokens"
    return ("".join(parts) if parts else None), refusal_text, cut


def _parse(text: str) -> tuple[Any, str | None]:
    """The JSON value of `text`, or why it is none (the standard library's words: "Expecting value at char 0")."""
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError:
        pass  # orjson refuses some JSON the standard library reads (integers past 64 bits): ask it
    try:
        return json.loads(text, parse_constant=_no_constant), None
    except json.JSONDecodeError as error:
        where = "char" if error.msg.endswith(" at") else "at char"  # "Unterminated string starting at"
        return None, f"{error.msg} {where} {error.pos}"
    except ValueError as error:
        return None, str(error)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _short(text: str) -> str:
    return text if len(text) <= 4 * _SHOWN else text[: 4 * _SHOWN] + "..."


class RoundSchemas:
    """The schemas the requests of one round ask for, read once from the round's request file.

    Most jobs ask every request for the same schema (or none): then only that one is kept, and a
    line that names no json_schema is not even parsed. The requests whose schema differs from the
    first request's are kept by custom_id, only those.
    """

    def __init__(self, raw_lines: Iterable[bytes]) -> None:
        self._first: AnswerSchema | None = None
        self._others: dict[str, AnswerSchema | None] = {}
        started = False
        for raw in raw_lines:
            if not raw:
                continue
            structured = b"json_schema" in raw
            if not structured and started and self._first is None:
                continue  # the common case of a job without schemas: no parse
            request = orjson.loads(raw)
            schema = schema_of(request.get("body")) if structured and isinstance(request, dict) else None
            if not started:
                self._first, started = schema, True
            elif _digest(schema) != _digest(self._first):
                self._others[str(request["custom_id"])] = schema

    def schema_for(self, custom_id: str) -> AnswerSchema | None:
        return self._others.get(custom_id, self._first) if self._others else self._first

    @property
    def any(self) -> bool:
        """Whether any request of the round asks for a schema."""
        return self._first is not None or any(schema is not None for schema in self._others.values())


def _digest(schema: AnswerSchema | None) -> str | None:
    return None if schema is None else schema.digest
