"""Which route a job takes: the Batch API (half price, up to 24 h) or realtime calls (minutes).

A user chooses per file, by object metadata ``batchline-mode`` (``x-amz-meta-batchline-mode`` on
upload) or by the first folder of the key (``realtime/...``, ``batch/...``, ``auto/...``);
otherwise the default from settings applies. ``auto`` sends small jobs realtime.
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["batch", "realtime", "auto"]
Route = Literal["batch", "realtime"]
MODES: tuple[Mode, ...] = ("batch", "realtime", "auto")
METADATA_KEY = "batchline-mode"


class InvalidModeError(ValueError):
    """The file asks for a mode that does not exist."""


def requested_mode(*, key: str, metadata: dict[str, str], default: Mode) -> Mode:
    value = metadata.get(METADATA_KEY)
    if value is not None:
        if value not in MODES:
            raise InvalidModeError(f"object metadata {METADATA_KEY}={value!r}: expected one of {', '.join(MODES)}")
        return value
    first = key.split("/", 1)[0] if "/" in key else ""
    if first in MODES:
        return first
    return default


def route_for(mode: Mode, *, valid_requests: int, auto_realtime_max_requests: int) -> Route:
    if mode == "auto":
        return "realtime" if valid_requests <= auto_realtime_max_requests else "batch"
    return mode
