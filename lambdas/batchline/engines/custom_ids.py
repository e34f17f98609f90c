"""Job-wide custom_id uniqueness in memory that does not grow with the file.

The planner must know, as it reads each line, whether its custom_id was used before: a repeat
becomes an invalid line naming the line of the first use, and never reaches a shard. Keeping
every id in memory, even as bare 16-byte fingerprints in flat arrays, makes the planner's memory
grow with the file (and doubles it for a moment at each resize). So memory holds only:

- the last `memory_ids` new ids exactly, in a dict: repeats are mostly close together (a retried
  row, a row pasted twice) and are found there at C speed, by string equality;
- a filter of fixed size (16 MiB by default, allocated at the first spill) over every id seen
  since, which says "maybe seen" or "certainly not".

When the dict is full its ids are spilled to a temporary file as one sorted run of 16-byte
records (64-bit string hash, CRC-32 of the UTF-8 bytes, line), with the first key of each 4 KiB
block kept in memory (half a bit per id), and the dict starts again. A new id is looked up in
the runs only when the filter says "maybe": at the default sizes about one id in 3,000 at a
million ids, and one in 40 at ten million, each costing one read per run. A real repeat is
looked for first in the run that answered last, so a file pasted twice costs one read per
repeated line. Two distinct ids are confused only when both fingerprints match, with probability
about n^2/2^97 (6e-16 at ten million ids); ids still in the dict are never confused.

The filter is a blocked Bloom filter: one byte per id, two bits set in it, both chosen by the
string hash Python has already computed for the dict, so testing costs a few integer operations.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from bisect import bisect_left
from zlib import crc32

_MASK64 = (1 << 64) - 1
_BLOCK_KEYS = 512  # one 4 KiB page of 64-bit fingerprints
# The two bits an id sets in its byte, chosen by six bits of its hash (the same bit twice, now and then).
_BITS = [(1 << (i & 7)) | (1 << (i >> 3)) for i in range(64)]


class _Run:
    """One spill in the spill file: its fingerprints in ascending order, then each one's
    (check << 32 | line) in the same order; and, in memory, the first fingerprint of each block."""

    __slots__ = ("offset", "count", "keys")

    def __init__(self, offset: int, count: int, keys: array) -> None:
        self.offset = offset
        self.count = count
        self.keys = keys

    def first_line(self, fd: int, fingerprint: int, check: int) -> int | None:
        first = max(0, bisect_left(self.keys, fingerprint) - 1) * _BLOCK_KEYS
        while first < self.count:
            # Two blocks per read: equal fingerprints may straddle a block boundary.
            keys = array("Q")
            keys.frombytes(os.pread(fd, 8 * min(2 * _BLOCK_KEYS, self.count - first), self.offset + 8 * first))
            index = bisect_left(keys, fingerprint)
            while index < len(keys):
                if keys[index] != fingerprint:
                    return None
                at = self.offset + 8 * (self.count + first + index)
                value = int.from_bytes(os.pread(fd, 8, at), "little")
                if value >> 32 == check:
                    return value & 0xFFFFFFFF
                index += 1
            first += len(keys)
        return None


class CustomIdRegistry:
    def __init__(self, memory_ids: int = 1 << 17, filter_bytes: int = 1 << 24) -> None:
        if filter_bytes < 1 or filter_bytes & (filter_bytes - 1):
            raise ValueError("filter_bytes must be a power of two")
        self._memory_ids = memory_ids
        self._recent: dict[str, int] = {}
        self._filter = bytearray()
        self._filter_bytes = filter_bytes
        self._filter_mask = filter_bytes - 1
        self._filter_shift = filter_bytes.bit_length() - 1
        self._runs: list[_Run] = []
        self._last_hit: _Run | None = None
        self._spill = None
        self._spilled = 0

    def __len__(self) -> int:
        return self._spilled + len(self._recent)

    @property
    def spills(self) -> int:
        return len(self._runs)

    def first_line(self, custom_id: str, line: int) -> int | None:
        """Register custom_id seen on `line`; return the line it was first seen on if it is a repeat."""
        recent = self._recent
        first = recent.get(custom_id)
        if first is not None:
            return first
        bits = self._filter
        if bits:  # something was spilled
            fingerprint = hash(custom_id)
            index = fingerprint & self._filter_mask
            mask = _BITS[(fingerprint >> self._filter_shift) & 63]
            seen = bits[index]
            if seen & mask == mask:
                first = self._spilled_first_line(custom_id, fingerprint & _MASK64)
                if first is not None:
                    return first
            else:
                bits[index] = seen | mask
        recent[custom_id] = line
        if len(recent) >= self._memory_ids:
            self._spill_recent()
        return None

    def first_lines(self, custom_ids: list[str], lines: list[int]) -> list[int | None]:
        """`first_line` of each id in turn, answered for a whole block at once (most of it in C)."""
        if len(set(custom_ids)) != len(custom_ids):  # a repeat within the block: one at a time
            return list(map(self.first_line, custom_ids, lines))
        recent = self._recent
        firsts = list(map(recent.get, custom_ids))
        fresh = [index for index, first in enumerate(firsts) if first is None]
        bits = self._filter
        if bits and fresh:
            mask, shift = self._filter_mask, self._filter_shift
            hashes = [hash(custom_ids[index]) for index in fresh]
            positions = [fingerprint & mask for fingerprint in hashes]
            wanted = [_BITS[(fingerprint >> shift) & 63] for fingerprint in hashes]
            maybe = [
                at
                for at, (seen, want) in enumerate(zip(map(bits.__getitem__, positions), wanted, strict=True))
                if seen & want == want
            ]
            for position, want in zip(positions, wanted, strict=True):
                bits[position] |= want
            for at in maybe:
                index = fresh[at]
                firsts[index] = self._spilled_first_line(custom_ids[index], hashes[at] & _MASK64)
            if maybe:
                fresh = [index for index in fresh if firsts[index] is None]
        recent.update(zip(map(custom_ids.__getitem__, fresh), map(lines.__getitem__, fresh), strict=True))
        if len(recent) >= self._memory_ids:
            self._spill_recent()
        return firsts

    def close(self) -> None:
        """Delete the spill file and free the filter."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._runs = []
        self._last_hit = None
        self._filter = bytearray()

    def _spilled_first_line(self, custom_id: str, fingerprint: int) -> int | None:
        check = crc32(custom_id.encode())
        fd = self._spill.fileno()
        last = self._last_hit
        if last is not None:
            first = last.first_line(fd, fingerprint, check)
            if first is not None:
                return first
        for run in reversed(self._runs):
            if run is not last:
                first = run.first_line(fd, fingerprint, check)
                if first is not None:
                    self._last_hit = run
                    return first
        return None

    def _spill_recent(self) -> None:
        """Write the dict's ids as one sorted run and empty the dict."""
        recent = self._recent
        keys = list(recent)
        hashes = list(map(hash, keys))
        if not self._filter:
            # From now on every new id is added to the filter as it is registered; these are the ids before.
            self._filter = bits = bytearray(self._filter_bytes)
            mask, shift = self._filter_mask, self._filter_shift
            for fingerprint in hashes:
                bits[fingerprint & mask] |= _BITS[(fingerprint >> shift) & 63]
        checks = map(crc32, map(str.encode, keys))
        records = [
            (fingerprint & _MASK64) << 64 | check << 32 | line
            for fingerprint, check, line in zip(hashes, checks, recent.values(), strict=True)
        ]
        records.sort()
        fingerprints = array("Q", [record >> 64 for record in records])
        values = array("Q", [record & _MASK64 for record in records])
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="batchline-custom-ids-")
        spill = self._spill
        offset = spill.seek(0, os.SEEK_END)
        fingerprints.tofile(spill)
        values.tofile(spill)
        spill.flush()
        self._runs.append(_Run(offset, len(records), fingerprints[::_BLOCK_KEYS]))
        self._spilled += len(records)
        recent.clear()
