"""How deep a request line may nest, decided on its bytes before any parser sees it.

Every parser and serializer on a request's way has its own depth limit, and they differ: msgspec
raises RecursionError near Python's recursion limit (about 1,000), orjson refuses to parse beyond
1,024 levels and to serialize beyond 254, Python's json recurses until the interpreter stops it.
One line nested deeply enough would stop the whole plan. So every line is held to one limit,
MAX_JSON_DEPTH, below all of them: a line nested deeper is one `invalid_json` error, whatever the
path that reads it, and every line that passes can be parsed, walked and re-serialized anywhere.
OpenAI publishes no depth limit of its own (its structured-output schemas stop at 10 levels); 128
is serde_json's default, far beyond any real request (4 to 12 levels) and half orjson's writer.
"""

from __future__ import annotations

import re

MAX_JSON_DEPTH = 128

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(value for value in range(256) if value not in b"[]{}")


def may_nest_too_deep(raw: bytes) -> bool:
    """False when the line certainly nests at most MAX_JSON_DEPTH levels: it has no more brackets
    than that (a count in C, at memory speed). True asks for `nesting_depth`."""
    return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in the line, brackets inside strings left out.

    Run only on lines `may_nest_too_deep` flags; the regular expression and the translation run
    in C, and the loop visits brackets only. A line that is not JSON still gets a number, which
    is all a refusal needs.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for value in brackets:
        if value == 0x5B or value == 0x7B:  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest
