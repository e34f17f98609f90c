"""Put records back in line order without holding them in memory.

Records arrive in the provider's order; each is appended to a temporary file and only its
(line, offset, length) is kept. Reading them back in line order then needs a few bytes per
record, however large the responses (embeddings can be tens of kilobytes each).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import orjson


class LineOrderedSpool:
    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._index: list[tuple[int, int, int]] = []
        self._offset = 0

    def __len__(self) -> int:
        return len(self._index)

    def add(self, line: int, record: dict) -> None:
        data = orjson.dumps(record) + b"\n"
        self._file.write(data)
        self._index.append((line, self._offset, len(data)))
        self._offset += len(data)

    def in_line_order(self) -> Iterator[bytes]:
        self._file.flush()
        self._index.sort()
        for _, offset, length in self._index:
            self._file.seek(offset)
            yield self._file.read(length)

    def close(self) -> None:
        self._file.close()
