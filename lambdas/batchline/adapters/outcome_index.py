"""Realtime outcome records put back in line order on local disk, in bounded memory (SQLite).

The workers write their records in the order answers came, spread over many objects, a line
possibly more than once (a duplicate delivery; a request not sent in one run and answered in the
next). Finalize needs them in input order, one per line: an answer wins over a request that was
not sent, and the first answer over a later one.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson


class OutcomeIndex:
    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(dir=directory, prefix="outcomes-")
        self._db = sqlite3.connect(Path(self._dir.name) / "outcomes.sqlite")
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE outcome (line INTEGER PRIMARY KEY, answered INTEGER, ok INTEGER, at TEXT, record BLOB)"
        )

    def add_all(self, raws: Iterable[bytes]) -> None:
        """Index records (raw JSON lines); per line an answer replaces an unsent record, never another answer."""
        rows = ((record, orjson.loads(record)) for record in raws)
        self._db.executemany(
            "INSERT INTO outcome VALUES (?, ?, ?, ?, ?) ON CONFLICT(line) DO UPDATE SET "
            "answered = excluded.answered, ok = excluded.ok, at = excluded.at, record = excluded.record "
            "WHERE outcome.answered = 0",
            (
                (
                    parsed["line"],
                    0 if parsed.get("unsent") else 1,
                    1 if "response" in parsed else 0,
                    parsed.get("answered_at"),
                    raw,
                )
                for raw, parsed in rows
            ),
        )
        self._db.commit()

    def in_line_order(self) -> Iterator[tuple[int, bool, str | None, bytes]]:
        """(line, succeeded, answered_at, record) for every line, in input order."""
        for line, ok, at, record in self._db.execute("SELECT line, ok, at, record FROM outcome ORDER BY line"):
            yield line, bool(ok), at, bytes(record)

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    def __enter__(self) -> OutcomeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
