"""Reading the emulator's billing ledger from a test: fetch it over HTTP, find what was billed twice.

A ledger row is one billed request (see the core module for what "billed" means), with its
``custom_id``. batchline's promise is that a custom_id of one job is never billed twice, across
crashes, resubmissions and retries; ``billed_twice`` is the check.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

LEDGER_PATH = "/_emulator/ledger"


def fetch_ledger(root_url: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The ledger's rows, oldest first, from the emulator at ``root_url`` (e.g. ``http://127.0.0.1:8787``,
    not the ``/v1`` base URL)."""
    with urllib.request.urlopen(f"{root_url.rstrip('/')}{LEDGER_PATH}", timeout=timeout) as response:
        return json.loads(response.read())["data"]


def billed_twice(ledger_rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """{custom_id: times billed} for every custom_id billed more than once; empty when none was.

    Rows without a custom_id (realtime calls made without ``X-Client-Request-Id``) cannot be told
    apart, so they are left out.
    """
    counts = Counter(row["custom_id"] for row in ledger_rows if row.get("custom_id") is not None)
    return {custom_id: count for custom_id, count in counts.items() if count > 1}
