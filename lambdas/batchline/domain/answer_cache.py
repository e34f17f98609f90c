"""The answer cache: an answer kept under the hash of what was asked, so that a rerun pays only for what changed.

A request's key is the sha256 of its canonical (url, body): orjson with sorted keys of
``{"url": ..., "body": ...}``. The custom_id is left out (a renumbered row asks the same thing), and
so are the key order and the white space of the line as written, and ``method`` (always POST). The
same key is found for a hand-written request line and for a table job's row rendered into one.

What is kept (`pack_answer`) is the successful result record's ``model``, ``response``, ``usage``
(and ``parsed`` when present), as zlib-compressed JSON; an answer bigger than `MAX_PACKED_BYTES`
once packed is simply not kept (a DynamoDB item holds 400 KB). The cache knows nothing of time:
an answer is reused for as long as it is in the table (clear the ``CACHE#`` items to forget them).

In one job, Plan looks every request's key up (`AnswerLookup`, a block at a time) and a known one
becomes its line's result at once (route ``cache``, costing nothing this run) instead of going into
a shard; a request asked again later in the same file is sent once, and each repeat is recorded as
a duplicate of its first line, whose outcome Finalize copies onto it (`copy_outcome`). Finalize then
keeps every new successful answer (`AnswerStore`). A job uploaded with the object metadata
``batchline-cache: off`` (``--no-cache``), or a stack whose ``cache`` setting is false, does none
of it: nothing is hashed, looked up, deduplicated or kept, and every line is sent as written (a
file that repeats a prompt on purpose, to sample it several times, wants exactly that).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

CACHE_METADATA_KEY = "batchline-cache"
ROUTE_CACHE = "cache"
# An item holds 400 KB with its keys and attribute names; the adapter stores the packed answer in base64
# (4/3 of it): what is packed stays under 290 KB.
MAX_PACKED_BYTES = 290_000
_KEPT_FIELDS = ("model", "response", "usage", "parsed")


class InvalidCacheSettingError(ValueError):
    """The file's ``batchline-cache`` metadata is neither on nor off."""


def cache_requested(metadata: dict[str, str]) -> bool:
    """Whether the upload lets its job use the cache: yes, unless its metadata says ``batchline-cache: off``."""
    value = metadata.get(CACHE_METADATA_KEY)
    if value is None or value.lower() == "on":
        return True
    if value.lower() == "off":
        return False
    raise InvalidCacheSettingError(f"object metadata {CACHE_METADATA_KEY}={value!r}: expected on or off")


def request_hash(raw: bytes) -> str:
    """The cache key of a request line: sha256 (hex) of its canonical url and body, custom_id excluded."""
    request = orjson.loads(raw)
    canonical = orjson.dumps({"url": request.get("url"), "body": request.get("body")}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def pack_answer(record: dict[str, Any]) -> bytes | None:
    """A successful result record as the cache keeps it; None when it is too big to keep."""
    kept = {name: record[name] for name in _KEPT_FIELDS if name in record}
    packed = zlib.compress(orjson.dumps(kept), 6)
    return packed if len(packed) <= MAX_PACKED_BYTES else None


def cached_result(*, custom_id: str, line: int, packed: bytes) -> dict[str, Any]:
    """The result record of a line answered from the cache: the kept answer, with the line's own id."""
    answer = orjson.loads(zlib.decompress(packed))
    return {"custom_id": custom_id, "line": line, "route": ROUTE_CACHE, **answer}


def copy_outcome(record: dict[str, Any], *, custom_id: str, line: int, first_line: int) -> dict[str, Any]:
    """A repeated request's outcome: its first line's result or error, with its own id and line."""
    return {**record, "custom_id": custom_id, "line": line, "duplicate_of": first_line}


def encode_duplicate(line: int, first_line: int, custom_id: str) -> bytes:
    """One line of a job's duplicates file: a repeated request's line, its first line, its custom_id."""
    return b"%d\t%d\t%s\n" % (line, first_line, orjson.dumps(custom_id))


def decode_duplicate(raw: bytes) -> tuple[int, int, str]:
    line, first, custom_id = raw.rstrip(b"\n").split(b"\t", 2)
    return int(line), int(first), orjson.loads(custom_id)


def encode_sent_keys(lines: Iterable[int], keys: Iterable[str], models: Iterable[str]) -> bytes:
    """Lines of a job's request keys file (line, key, the model asked): how Finalize keeps a new answer."""
    return b"".join(
        b"%d\t%s\t%s\n" % (line, key.encode(), orjson.dumps(model))
        for line, key, model in zip(lines, keys, models, strict=True)
    )


def decode_sent_key(raw: bytes) -> tuple[int, str, str]:
    line, key, model = raw.rstrip(b"\n").split(b"\t", 2)
    return int(line), key.decode(), orjson.loads(model)


class AnswerLookup(Protocol):
    """The cache as Plan reads it."""

    def known(self, keys: list[str]) -> dict[str, bytes]:
        """The packed answers of those keys that have one (keys without are left out)."""
        ...


class AnswerStore(Protocol):
    """The cache as Finalize writes it."""

    def keep(self, answers: Iterable[tuple[str, bytes]]) -> int:
        """Keep each (key, packed answer); how many were written."""
        ...
