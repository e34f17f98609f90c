import pytest
from batchline.domain.routing import InvalidModeError, requested_mode, route_for


def test_metadata_wins_over_the_key_prefix_which_wins_over_the_default():
    assert requested_mode(key="realtime/a.jsonl", metadata={"batchline-mode": "batch"}, default="auto") == "batch"
    assert requested_mode(key="realtime/a.jsonl", metadata={}, default="batch") == "realtime"
    assert requested_mode(key="inbox/a.jsonl", metadata={}, default="auto") == "auto"
    assert requested_mode(key="a.jsonl", metadata={}, default="batch") == "batch"


def test_a_wrong_mode_is_refused_with_what_is_allowed():
    with pytest.raises(InvalidModeError, match="batch, realtime, auto"):
        requested_mode(key="a.jsonl", metadata={"batchline-mode": "fast"}, default="batch")


def test_auto_sends_small_jobs_realtime_and_large_ones_to_the_batch_api():
    assert route_for("auto", valid_requests=10, auto_realtime_max_requests=10) == "realtime"
    assert route_for("auto", valid_requests=11, auto_realtime_max_requests=10) == "batch"
    assert route_for("realtime", valid_requests=10**6, auto_realtime_max_requests=10) == "realtime"
