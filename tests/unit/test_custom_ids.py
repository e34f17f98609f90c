"""custom_id uniqueness is exact across the whole file, in memory that stops growing."""

from __future__ import annotations

import random

import pytest
from batchline.engines.custom_ids import CustomIdRegistry


def test_repeats_are_found_with_the_line_of_first_use_across_spills():
    registry = CustomIdRegistry(memory_ids=64, filter_bytes=1 << 14)
    for line in range(1, 5_001):
        assert registry.first_line(f"id-{line}", line) is None
    assert len(registry) == 5_000 and registry.spills == 78
    assert registry.first_line("id-1", 10_000) == 1  # spilled first
    assert registry.first_line("id-4991", 10_001) == 4_991  # spilled last
    assert registry.first_line("id-5000", 10_002) == 5_000  # still in memory
    assert registry.first_line("id-5001", 10_003) is None
    assert registry.first_line("id-5001", 10_004) == 10_003


@pytest.mark.parametrize("filter_bytes", [1, 1 << 6, 1 << 16], ids=["every-id-maybe", "crowded", "roomy"])
def test_the_answers_match_a_plain_dict_whatever_the_filter_says(filter_bytes):
    """A filter that answers "maybe" for everything only costs reads; it never invents a repeat."""
    rng = random.Random(filter_bytes)
    registry = CustomIdRegistry(memory_ids=50, filter_bytes=filter_bytes)
    reference: dict[str, int] = {}
    pool = [f"row-{n}" for n in range(3_000)] + ["tab\there", "ünïcödé ✓", "emoji 🤔", '"quoted"']
    for line in range(1, 8_001):
        custom_id = rng.choice(pool)
        assert registry.first_line(custom_id, line) == reference.get(custom_id), (custom_id, line)
        reference.setdefault(custom_id, line)
    assert len(registry) == len(reference)


def test_a_file_pasted_twice_finds_every_repeat_in_the_second_half():
    registry = CustomIdRegistry(memory_ids=100, filter_bytes=1 << 12)
    ids = [f"feedback-{n:07d}" for n in range(5_000)]
    for line, custom_id in enumerate(ids, 1):
        assert registry.first_line(custom_id, line) is None
    for line, custom_id in enumerate(ids, 5_001):
        assert registry.first_line(custom_id, line) == line - 5_000


def test_close_deletes_the_spill_file_and_the_filter():
    registry = CustomIdRegistry(memory_ids=8)
    for line in range(1, 100):
        registry.first_line(str(line), line)
    spill = registry._spill
    assert spill is not None and registry.spills == 12
    registry.close()
    assert spill.closed and registry._filter == bytearray()


def test_the_filter_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        CustomIdRegistry(filter_bytes=1000)
