"""Failures the emulator produces on request, so tests can prove batchline copes with each one.

A fault spec is a comma-separated list of ``name`` or ``name=value`` items, from
``settings.emulator.faults`` or, when set, the ``BATCHLINE_EMULATOR_FAULTS`` environment variable
(the variable wins, so one run can be given faults without editing its settings file), or from
the ``--faults SPEC`` option of ``batchline emulator`` and ``batchline local run``, which wins over
both (``--faults ""`` runs with none):

- ``token_limit=N``: the first N batches created fail validation with ``token_limit_exceeded``.
- ``stuck=N``: the first N batches created stay ``validating`` until cancelled (or the 24 h window ends).
- ``expire=F``: every batch expires once about a share F (0..1) of its requests has completed.
- ``request_error=F``: a share F of batch requests end in the error file with a 500 response.
- ``http_429=F`` / ``http_5xx=F``: a share F of realtime calls is answered 429 / 5xx.
- ``schema_invalid=F``: a share F of the answers to requests asking for a ``json_schema`` do not follow
  it (a required property left out, or JSON cut short), batch and realtime alike. Drawn per
  (custom_id, how many answers that custom_id was billed before), so the same attempt always gets the
  same answer and asking again can pass.
- ``insufficient_quota``: every realtime call and every batch creation is answered 429 insufficient_quota.
- ``refuse_line=ID``: every batch whose file holds the request with custom_id ID fails validation with
  ``invalid_json_line`` naming that request's line, as a line the provider cannot read does.
- ``refuse_file=ID``: the same, but the refusal names no line (the file as a whole is refused), so
  only bisecting the file finds the request.

A wrong spec is refused with a ValueError naming the offending item, when the emulator is built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields

FAULTS_ENV = "BATCHLINE_EMULATOR_FAULTS"

_COUNTS = ("token_limit", "stuck")
_SHARES = ("expire", "request_error", "http_429", "http_5xx", "schema_invalid")
_FLAGS = ("insufficient_quota",)
_TEXTS = ("refuse_line", "refuse_file")


@dataclass(frozen=True)
class Faults:
    """The failures to inject; the default injects none."""

    token_limit: int = 0
    stuck: int = 0
    expire: float | None = None
    request_error: float = 0.0
    http_429: float = 0.0
    http_5xx: float = 0.0
    schema_invalid: float = 0.0
    insufficient_quota: bool = False
    refuse_line: str | None = None
    refuse_file: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Faults:
        values: dict[str, object] = {}
        for raw_item in spec.split(","):
            item = raw_item.strip()
            if not item:
                continue
            name, has_value, raw_value = (part.strip() for part in item.partition("="))
            if name in values:
                raise ValueError(f"emulator fault {item!r} is given twice")
            values[name] = _parse_value(item, name, raw_value if has_value else None)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, spec: str, environ: Mapping[str, str]) -> Faults:
        """The faults to inject: the environment variable's spec when it is set (even empty), else the settings'."""
        override = environ.get(FAULTS_ENV)
        source = spec if override is None else override
        try:
            return cls.parse(source)
        except ValueError as error:
            origin = FAULTS_ENV if override is not None else "settings.emulator.faults"
            raise ValueError(f"{origin}: {error}") from None

    def describe(self) -> str:
        """The spec back, for logs: only the faults that are on."""
        default = Faults()
        items = []
        for entry in fields(self):
            value = getattr(self, entry.name)
            if value == getattr(default, entry.name):
                continue
            items.append(entry.name if isinstance(value, bool) else f"{entry.name}={value}")
        return ",".join(items)


def _parse_value(item: str, name: str, raw: str | None) -> int | float | bool | str:
    known = _COUNTS + _SHARES + _FLAGS + _TEXTS
    if name not in known:
        raise ValueError(f"unknown emulator fault {item!r}; known faults: {', '.join(known)}")
    if name in _FLAGS:
        if raw is not None:
            raise ValueError(f"emulator fault {item!r} takes no value; write just {name!r}")
        return True
    if raw is None or raw == "":
        example = "r1" if name in _TEXTS else 1 if name in _COUNTS else 0.5
        raise ValueError(f"emulator fault {item!r} needs a value, e.g. {name}={example}")
    if name in _TEXTS:
        return raw
    if name in _COUNTS:
        try:
            count = int(raw)
        except ValueError:
            raise ValueError(f"emulator fault {item!r}: {raw!r} is not a whole number") from None
        if count < 0:
            raise ValueError(f"emulator fault {item!r}: the count must not be negative")
        return count
    try:
        share = float(raw)
    except ValueError:
        raise ValueError(f"emulator fault {item!r}: {raw!r} is not a number") from None
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"emulator fault {item!r}: the share must be between 0 and 1")
    return share


def hits(share: float, *key: str) -> bool:
    """Whether the thing named by ``key`` falls in ``share``: the same key always gives the same answer."""
    if share <= 0.0:
        return False
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
