"""Job-wide custom_id uniqueness in about 24 bytes per request.

A dict of strings costs ~150 bytes per id (150 MB for a million requests) and would dominate the
planner's memory. This open-addressing table keeps, per id, a 96-bit fingerprint (Python's
64-bit string hash, computed in C and cached on the string, plus an independent CRC-32) and the
line that id was first seen on, in flat arrays at a load factor of at most one half. Two distinct
ids share a fingerprint with probability about n^2/2^97: 6e-16 at ten million ids.
"""

from __future__ import annotations

from array import array
from zlib import crc32

_MASK64 = (1 << 64) - 1


class CustomIdRegistry:
    def __init__(self, initial_capacity: int = 1 << 16) -> None:
        capacity = 1
        while capacity < initial_capacity:
            capacity <<= 1
        self._allocate(capacity)
        self._size = 0

    def _allocate(self, capacity: int) -> None:
        self._capacity = capacity
        self._mask = capacity - 1
        self._hashes = array("Q", bytes(8 * capacity))
        self._checks = array("I", bytes(4 * capacity))
        self._lines = array("I", bytes(4 * capacity))  # 0 marks an empty slot: lines start at 1

    def __len__(self) -> int:
        return self._size

    def first_line(self, custom_id: str, line: int) -> int | None:
        """Register custom_id seen on `line`; return the line it was first seen on if it is a repeat."""
        fingerprint = hash(custom_id) & _MASK64
        check = crc32(custom_id.encode())
        lines = self._lines
        hashes = self._hashes
        mask = self._mask
        slot = fingerprint & mask
        while True:
            seen = lines[slot]
            if not seen:
                hashes[slot] = fingerprint
                self._checks[slot] = check
                lines[slot] = line
                self._size += 1
                if self._size * 2 > self._capacity:
                    self._grow()
                return None
            if hashes[slot] == fingerprint and self._checks[slot] == check:
                return seen
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old = (self._hashes, self._checks, self._lines)
        self._allocate(self._capacity * 2)
        hashes, checks, lines, mask = self._hashes, self._checks, self._lines, self._mask
        for fingerprint, check, line in zip(*old, strict=True):
            if not line:
                continue
            slot = fingerprint & mask
            while lines[slot]:
                slot = (slot + 1) & mask
            hashes[slot] = fingerprint
            checks[slot] = check
            lines[slot] = line
