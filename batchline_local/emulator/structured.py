"""Structured outputs: the JSON an answer holds when a request asks for ``json_object`` or ``json_schema``.

OpenAI reads the format (chat's ``response_format``, the responses endpoint's ``text.format``)
before it runs anything and answers 400 for one it cannot use: an unknown type, a json_schema
without a name, a schema that is not an object, a type JSON Schema does not have, a ``$ref`` that
leads nowhere; with ``strict: true`` also a schema outside the structured-outputs subset (the root
not an object, an object without ``additionalProperties: false`` or with a property missing from
``required``, a keyword such as ``default`` or ``if`` that strict mode does not permit). JSON mode
needs the word "json" somewhere in the messages. The emulator refuses the same.

An accepted schema gets a value that validates against it (objects, arrays with minItems and
maxItems, enum and const, the scalar types with their bounds, formats and patterns, anyOf,
allOf, $defs/$ref, recursion), drawn from the request's seed, so the same request gets the same
JSON. The writer is here because the registry's generators do not fit a threaded server that must
answer a request the same way each time: jsf draws from the process-wide random module and Faker,
hypothesis-jsonschema needs Hypothesis's search engine at run time.
"""

from __future__ import annotations

import json
import math
import random
import re
import re._constants as sre
import re._parser as sre_parse
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest

JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
FORMAT_TYPES = ("text", "json_object", "json_schema")
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NESTING = 10  # strict mode: at most this many levels of nested objects
# Keywords strict mode refuses ("In context=(...), 'default' is not permitted.").
STRICT_FORBIDDEN = (
    "default",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "unevaluatedProperties",
    "propertyNames",
)
# Past this depth the writer takes the shortest way out of a recursive schema: null, no items.
SHALLOW_AFTER = 4
EXTRA_ITEMS = 3  # arrays hold minItems to minItems + this many items, within maxItems
_WORDS = (
    "alpha answer batch bright calm clear cloud data delta early field forest garden green harbor light "
    "market morning north open paper plain quiet rapid river road round simple small steady stone summer "
    "table travel valley water window winter world yellow"
).split()


@dataclass(frozen=True)
class OutputFormat:
    """A request's JSON output format, checked. ``schema`` is None for json_object."""

    type: str  # "json_object" or "json_schema"
    name: str | None
    schema: dict[str, Any] | None
    strict: bool
    echo: dict[str, Any]  # the format as the responses endpoint repeats it in its ``text.format``


def chat_format(body: dict[str, Any]) -> OutputFormat | None:
    """The chat request's ``response_format``, or None for plain text; InvalidRequest as OpenAI refuses it."""
    given = body.get("response_format")
    if given is None:
        return None
    fmt = _kind(given, "response_format")
    if fmt == "text":
        return None
    if fmt == "json_object":
        _require_json_word(body.get("messages"), "messages", "response_format")
        return OutputFormat("json_object", None, None, False, {"type": "json_object"})
    spec = given.get("json_schema")
    if not isinstance(spec, dict):
        raise _missing("response_format.json_schema") if spec is None else _not_an_object("response_format.json_schema")
    return _schema_format(spec, where="response_format", echo_base={})


def responses_format(body: dict[str, Any]) -> OutputFormat | None:
    """The responses request's ``text.format``, or None for plain text; InvalidRequest as OpenAI refuses it."""
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _not_an_object("text")
    given = text.get("format")
    if given is None:
        return None
    fmt = _kind(given, "text.format")
    if fmt == "text":
        return None
    if fmt == "json_object":
        _require_json_word([body.get("instructions"), body.get("input")], "input", "text.format")
        return OutputFormat("json_object", None, None, False, {"type": "json_object"})
    return _schema_format(given, where="text.format", echo_base={"type": "json_schema"})


def _kind(given: Any, param: str) -> str:
    if not isinstance(given, dict):
        raise _not_an_object(param)
    kind = given.get("type")
    if kind is None:
        raise _missing(f"{param}.type")
    if kind not in FORMAT_TYPES:
        raise InvalidRequest(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            param=f"{param}.type",
            code="invalid_value",
        )
    return kind


def _require_json_word(messages: Any, where: str, param: str) -> None:
    if "json" not in json.dumps(messages, ensure_ascii=False).lower():
        raise InvalidRequest(
            f"'{where}' must contain the word 'json' in some form, to use '{param}' of type 'json_object'.",
            param=where,
            code=None,
        )


def _schema_format(spec: dict[str, Any], *, where: str, echo_base: dict[str, Any]) -> OutputFormat:
    prefix = f"{where}.json_schema" if where == "response_format" else where
    name = spec.get("name")
    if name is None:
        raise _missing(f"{prefix}.name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidRequest(
            f"Invalid '{prefix}.name': string does not match pattern. Expected a string of at most 64 "
            "characters that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            param=f"{prefix}.name",
            code="invalid_value",
        )
    strict = spec.get("strict") is True
    schema = spec.get("schema", {})
    param = "response_format" if where == "response_format" else f"{where}.schema"
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"Invalid schema for {_label(where)} '{name}': schema must be a JSON Schema object, "
            f"got {_json_type(schema)}.",
            param=param,
            code="invalid_json_schema",
        )
    _SchemaCheck(schema, strict=strict, name=name, label=_label(where), param=param).check()
    echo = {**echo_base, "name": name, "schema": schema, "strict": strict}
    if "description" in spec:
        echo["description"] = spec["description"]
    return OutputFormat("json_schema", name, schema, strict, echo)


def _label(where: str) -> str:
    return "response_format" if where == "response_format" else "text.format"


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _not_an_object(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected an object, but got another type instead.",
        param=param,
        code="invalid_type",
    )


def _json_type(value: Any) -> str:
    names = {str: "a string", list: "an array", bool: "a boolean", int: "an integer", float: "a number"}
    return "null" if value is None else names.get(type(value), "an object")


class _SchemaCheck:
    """Walks a schema once and raises the 400 OpenAI gives for the first thing it cannot use."""

    def __init__(self, root: dict[str, Any], *, strict: bool, name: str, label: str, param: str) -> None:
        self.root, self.strict, self.name, self.label, self.param = root, strict, name, label, param
        self._seen: set[int] = set()

    def fail(self, context: tuple[str, ...], problem: str) -> InvalidRequest:
        return InvalidRequest(
            f"Invalid schema for {self.label} '{self.name}': In context={context!r}, {problem}",
            param=self.param,
            code="invalid_json_schema",
        )

    def check(self) -> None:
        if self.strict and (_types(self.root) != ["object"] or "anyOf" in self.root):
            got = self.root.get("type", "anyOf" if "anyOf" in self.root else None)
            raise self.fail((), f"schema must be a JSON Schema of 'type: \"object\"', got 'type: {json.dumps(got)}'.")
        self.node(self.root, (), 0)

    def node(self, schema: Any, context: tuple[str, ...], objects: int) -> None:
        if isinstance(schema, bool) and not self.strict:
            return
        if not isinstance(schema, dict):
            raise self.fail(context, f"schema must be an object, got {_json_type(schema)}.")
        if id(schema) in self._seen:  # a $ref cycle, or a schema reached twice: checked already
            return
        self._seen.add(id(schema))
        if self.strict:
            for keyword in STRICT_FORBIDDEN:
                if keyword in schema:
                    raise self.fail(context, f"'{keyword}' is not permitted.")
        if "$ref" in schema:
            target = _resolve(self.root, schema["$ref"])
            if target is None:
                raise self.fail(context, f"reference {json.dumps(schema['$ref'])} can't be resolved.")
            self.node(target, (*context, "$ref"), objects)
        for kind in _types(schema):
            if kind not in JSON_TYPES:
                raise self.fail(
                    context, f"type {json.dumps(kind)} is not a JSON Schema type; use one of {', '.join(JSON_TYPES)}."
                )
        if "object" in _types(schema) or "properties" in schema:
            self.object(schema, context, objects + 1)
        if "items" in schema:
            self.node(schema["items"], (*context, "items"), objects)
        for keyword in ("anyOf", "allOf", "oneOf"):
            branches = schema.get(keyword)
            if branches is None:
                continue
            if not isinstance(branches, list) or not branches:
                raise self.fail(context, f"'{keyword}' must be a non-empty array of schemas.")
            for index, branch in enumerate(branches):
                self.node(branch, (*context, keyword, str(index)), objects)
        for keyword in ("$defs", "definitions"):
            for key, definition in (schema.get(keyword) or {}).items():
                self.node(definition, (*context, keyword, key), objects)
        if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
            raise self.fail(context, "'enum' must be a non-empty array.")

    def object(self, schema: dict[str, Any], context: tuple[str, ...], objects: int) -> None:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise self.fail(context, "'properties' must be an object.")
        if self.strict:
            if objects > MAX_NESTING:
                raise self.fail(context, f"the schema nests objects deeper than {MAX_NESTING} levels.")
            if schema.get("additionalProperties") is not False:
                raise self.fail(context, "'additionalProperties' is required to be supplied and to be false.")
            missing = [key for key in properties if key not in (schema.get("required") or [])]
            if missing:
                raise self.fail(
                    context,
                    "'required' is required to be supplied and to be an array including every key in properties. "
                    f"Missing '{missing[0]}'.",
                )
        for key, child in properties.items():
            self.node(child, (*context, "properties", key), objects)


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    return [] if kind is None else list(kind) if isinstance(kind, list) else [kind]


def _resolve(root: dict[str, Any], ref: Any) -> Any:
    """The schema a local ``$ref`` ("#", "#/$defs/x", any JSON pointer into the root) names, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# ----- writing a value ------------------------------------------------------------------------------


def json_answer(fmt: OutputFormat, seed: int) -> str:
    """The answer's text: compact JSON, as OpenAI's structured outputs are, fixed by ``seed``."""
    rng = random.Random(seed)
    if not fmt.schema:  # json_object, or a json_schema that gives no schema: any JSON object
        value: Any = {_words(rng, 1, 1).replace(" ", "_"): _words(rng, 1, 4) for _ in range(rng.randint(1, 3))}
    else:
        value = _Writer(fmt.schema, rng).value(fmt.schema, 0)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def off_schema_answer(fmt: OutputFormat, seed: int) -> str:
    """An answer that does not follow the format's schema (the ``schema_invalid`` fault), fixed by ``seed``:
    the valid value with a required property left out, or, when it has none (or one time in three),
    its JSON cut short."""
    text = json_answer(fmt, seed)
    rng = random.Random(seed ^ 0x5C4E3A)
    value = json.loads(text)
    required = [key for key in ((fmt.schema or {}).get("required") or []) if isinstance(value, dict) and key in value]
    if required and rng.random() < 2 / 3:
        del value[rng.choice(required)]
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text[: max(1, len(text) // 2)] if len(text) > 1 else "{"


def _words(rng: random.Random, least: int, most: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(least, most)))


class _Writer:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root, self.rng = root, rng

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):
            return _words(self.rng, 1, 3)  # `true` or a schema the check let through: anything goes
        schema = self.merged(schema)
        shallow = depth >= SHALLOW_AFTER
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return self.value(self.branch(branches, shallow), depth + 1)
        kinds = _types(schema) or [self.implied_type(schema)]
        kind = "null" if shallow and "null" in kinds else self.rng.choice(kinds)
        return getattr(self, f"_{kind}")(schema, depth)

    def merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The schema with its $ref followed and its allOf folded in, the keywords beside them kept."""
        while "$ref" in schema:
            target = _resolve(self.root, schema["$ref"])
            rest = {key: value for key, value in schema.items() if key != "$ref"}
            schema = {**(target if isinstance(target, dict) else {}), **rest}
        for part in schema.get("allOf") or ():
            part = self.merged(part) if isinstance(part, dict) else {}
            joined = {key: value for key, value in schema.items() if key != "allOf"}
            joined.update({key: value for key, value in part.items() if key not in joined})
            joined["properties"] = {**part.get("properties", {}), **schema.get("properties", {})}
            joined["required"] = list(dict.fromkeys([*schema.get("required", []), *part.get("required", [])]))
            schema = joined
        return schema

    def branch(self, branches: list[Any], shallow: bool) -> Any:
        if shallow:  # deep in a recursive schema: the branch least likely to recurse again
            for branch in branches:
                if isinstance(branch, dict) and "$ref" not in branch and _types(branch) in (["null"], ["string"]):
                    return branch
        return self.rng.choice(branches)

    @staticmethod
    def implied_type(schema: dict[str, Any]) -> str:
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(key in schema for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        value = {key: self.value(child, depth + 1) for key, child in properties.items()}
        if not properties and schema.get("additionalProperties") is not False:
            extra = schema.get("additionalProperties")
            for _ in range(0 if depth >= SHALLOW_AFTER else self.rng.randint(1, 2)):
                key = self.rng.choice(_WORDS)
                value[key] = self.value(extra, depth + 1) if isinstance(extra, dict) else _words(self.rng, 1, 3)
        return value

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        least = max(int(schema.get("minItems", 0)), len(prefix) if schema.get("items") is False else 0)
        most = schema.get("maxItems")
        if depth >= SHALLOW_AFTER:
            count = least
        else:
            count = self.rng.randint(max(least, 1 if most != 0 else 0), least + EXTRA_ITEMS)
        if most is not None:
            count = min(count, int(most))
        items = schema.get("items", {})
        return [self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)]

    def _string(self, schema: dict[str, Any], depth: int) -> str:
        if "pattern" in schema:
            text = pattern_text(schema["pattern"], self.rng)
        elif schema.get("format") in _FORMATS:
            text = _FORMATS[schema["format"]](self.rng)
        else:
            text = _words(self.rng, 1, 4).capitalize()
        least, most = schema.get("minLength"), schema.get("maxLength")
        if least is not None and len(text) < least:
            text = (text + " " + " ".join(self.rng.choice(_WORDS) for _ in range(least)))[: max(least, 1)]
        if most is not None and len(text) > most:
            text = text[:most]
        return text

    def _integer(self, schema: dict[str, Any], depth: int) -> int:
        low, high = _bounds(schema, whole=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            return self.rng.randint(first, max(first, last)) * step
        return self.rng.randint(int(low), max(int(low), int(high)))

    def _number(self, schema: dict[str, Any], depth: int) -> float | int:
        low, high = _bounds(schema, whole=False)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            multiple = self.rng.randint(first, max(first, last)) * step
            return int(multiple) if float(multiple).is_integer() else multiple
        value = round(self.rng.uniform(low, high), 2)
        return value if low <= value <= high else (low + high) / 2

    def _boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def _null(self, schema: dict[str, Any], depth: int) -> None:
        return None


def _bounds(schema: dict[str, Any], *, whole: bool) -> tuple[float, float]:
    """The closed range the value may take: the schema's bounds, else 0..100 (or a span beside the one given)."""
    gap = 1 if whole else 0.01
    low = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + gap if low is None else max(low, schema["exclusiveMinimum"] + gap)
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - gap if high is None else min(high, schema["exclusiveMaximum"] - gap)
    if low is None and high is None:
        low, high = 0, 100
    elif low is None:
        low = min(0, high - 100)
    elif high is None:
        high = max(100, low + 100)
    if whole:
        low, high = math.ceil(low), math.floor(high)
    return low, max(low, high)


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(20, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


_FORMATS = {
    "date": _date,
    "time": _time,
    "date-time": lambda rng: f"{_date(rng)}T{_time(rng)}",
    "duration": lambda rng: f"P{rng.randint(1, 30)}DT{rng.randint(1, 23)}H",
    "email": lambda rng: f"{rng.choice(_WORDS)}.{rng.choice(_WORDS)}@example.com",
    "hostname": lambda rng: f"{rng.choice(_WORDS)}.example.com",
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
}


# ----- a string that a pattern matches --------------------------------------------------------------

_PRINTABLE = [chr(code) for code in range(0x21, 0x7F)]
_CATEGORY_CHARS = {
    sre.CATEGORY_DIGIT: "0123456789",
    sre.CATEGORY_NOT_DIGIT: "abcdefghijklmnopqrstuvwxyz",
    sre.CATEGORY_WORD: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
    sre.CATEGORY_NOT_WORD: " -.,",
    sre.CATEGORY_SPACE: " ",
    sre.CATEGORY_NOT_SPACE: "abcdefghijklmnopqrstuvwxyz0123456789",
}


def pattern_text(pattern: str, rng: random.Random) -> str:
    """A string that ``pattern`` matches (JSON Schema patterns search, so anchors need nothing)."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return _words(rng, 1, 2)
    groups: dict[int, str] = {}
    return "".join(_emit(parsed, rng, groups))


def _emit(items: Any, rng: random.Random, groups: dict[int, str]) -> list[str]:
    out: list[str] = []
    for op, arg in items:
        if op is sre.LITERAL:
            out.append(chr(arg))
        elif op is sre.NOT_LITERAL:
            out.append(next(c for c in "ax0" if ord(c) != arg))
        elif op is sre.ANY:
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz"))
        elif op is sre.IN:
            out.append(_from_set(arg, rng))
        elif op is sre.BRANCH:
            out += _emit(rng.choice(arg[1]), rng, groups)
        elif op is sre.SUBPATTERN:
            group, _, _, body = arg
            text = "".join(_emit(body, rng, groups))
            if group is not None:
                groups[group] = text
            out.append(text)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            least, most, body = arg
            most = least + EXTRA_ITEMS if most == sre.MAXREPEAT else min(most, least + EXTRA_ITEMS)
            for _ in range(rng.randint(least, most)):
                out += _emit(body, rng, groups)
        elif op is sre.GROUPREF:
            out.append(groups.get(arg, ""))
        elif op is sre.ATOMIC_GROUP:
            out += _emit(arg, rng, groups)
        # AT (anchors), ASSERT, ASSERT_NOT: nothing to write
    return out


def _from_set(members: list[tuple[Any, Any]], rng: random.Random) -> str:
    if members and members[0][0] is sre.NEGATE:
        refused = {c for c in _PRINTABLE if _in_set(c, members[1:])}
        return rng.choice([c for c in _PRINTABLE if c not in refused] or ["~"])
    choices: list[str] = []
    for op, arg in members:
        if op is sre.LITERAL:
            choices.append(chr(arg))
        elif op is sre.RANGE:
            low, high = arg
            choices.append(chr(rng.randint(low, min(high, low + 200))))
        elif op is sre.CATEGORY:
            choices.append(rng.choice(_CATEGORY_CHARS.get(arg, "a")))
    return rng.choice(choices) if choices else "a"


def _in_set(char: str, members: list[tuple[Any, Any]]) -> bool:
    code = ord(char)
    for op, arg in members:
        if op is sre.LITERAL and arg == code:
            return True
        if op is sre.RANGE and arg[0] <= code <= arg[1]:
            return True
        if op is sre.CATEGORY and char in _CATEGORY_CHARS.get(arg, ""):
            return True
    return False
