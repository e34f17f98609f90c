"""The bytes of a request as it is written to a shard file: one line for every reader, the provider's too.

The provider splits an uploaded file the way Python's ``str.splitlines`` does: besides ``\\n`` it
breaks at ``\\r``, ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, U+0085, U+2028 and U+2029. A line that
is valid JSON can still hold four of these raw: ``\\r`` as white space between tokens, and U+0085,
U+2028 and U+2029 inside strings (JSON forbids the others raw anywhere). One such byte makes the
provider see two broken lines and refuse the whole file, so every request of the shard would fail.

The canonical line rewrites exactly those characters and nothing else: a raw ``\\r`` can only be
white space (RFC 8259 forbids unescaped control characters in strings), so it becomes a space; the
three others can only be inside strings, where ``\\u0085``, ``\\u2028`` and ``\\u2029`` are the same
characters, so every string (the custom_id, the join key, included) decodes to what it was. UTF-8 is
self-synchronising, so their byte sequences cannot be matched across two other characters.
Re-serialising the whole request instead would also change what is sent: orjson turns integers
wider than 64 bits into floats and keeps only the last of repeated keys.
"""

from __future__ import annotations

import re

# The raw characters a valid JSON line may hold that a line splitter breaks at, and what replaces each.
_CANONICAL = (
    (b"\r", b" "),
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)
# Every character str.splitlines breaks at but \n, for lines that were not made canonical.
_ANY_BREAK = re.compile(rb"[\r\x0b\x0c\x1c-\x1e]|\xc2\x85|\xe2\x80[\xa8\xa9]")


def canonical_line(raw: bytes) -> bytes:
    """`raw` (one valid JSON request) without a character a line splitter would break it at.

    Most lines hold none and are returned as they are. This runs on every request a job plans, so
    the common cases take the cheapest scans: a search for CR, an ASCII check, and for other lines
    a UTF-8 decoding (in C, faster than searching the bytes for three multi-byte sequences).
    """
    if b"\r" not in raw:
        if raw.isascii():
            return raw
        text = raw.decode()
        if "\u2028" not in text and "\u2029" not in text and "\x85" not in text:
            return raw
    for character, replacement in _CANONICAL:
        if character in raw:
            raw = raw.replace(character, replacement)
    return raw


def provider_line_spans(raw_lines: list[bytes]) -> list[int]:
    """For each line of a file as batchline wrote it (split at ``\\n``), the last line number the
    provider gives it, splitting the same bytes as it does.

    A file written before shard lines were canonical may hold a line the provider counts as two or
    more; the line numbers of a refusal are mapped back to the requests through these spans.
    """
    spans, last = [], 0
    for raw in raw_lines:
        if _ANY_BREAK.search(raw) is None:
            last += 1
        else:
            last += len((raw + b"\n").decode("utf-8", errors="replace").splitlines())
        spans.append(last)
    return spans
