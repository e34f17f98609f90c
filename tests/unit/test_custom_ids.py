from batchline.domain.custom_ids import CustomIdRegistry


def test_repeats_are_found_with_the_line_of_first_use_across_table_growth():
    registry = CustomIdRegistry(initial_capacity=4)
    for line in range(1, 20_001):
        assert registry.first_line(f"id-{line}", line) is None
    assert len(registry) == 20_000
    assert registry.first_line("id-1", 30_000) == 1
    assert registry.first_line("id-19999", 30_001) == 19_999
    assert registry.first_line("id-20001", 30_002) is None
