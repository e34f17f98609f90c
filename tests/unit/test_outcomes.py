"""Each request of a batch ends as exactly one result or one error, joined back to its line."""

from __future__ import annotations

import json

import pytest
from batchline.composition import price_book
from batchline.domain.outcomes import BatchJoiner
from batchline.settings import load_settings


def out_line(custom_id, *, status=200, body=None, error=None, response=True):
    return json.dumps(
        {
            "id": f"batch_req_{custom_id}",
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": "req", "body": body} if response else None,
            "error": error,
        }
    ).encode()


@pytest.fixture
def joiner():
    return BatchJoiner(
        manifest={"a": 1, "b": 5, "c": 9, "d": 12}, model="gpt-4o-mini", prices=price_book(load_settings())
    )


def test_results_and_both_error_shapes_are_joined_to_their_lines(joiner):
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    lines = [
        out_line("c", body={"id": "x", "usage": usage}),
        out_line(
            "a",
            status=400,
            body={"error": {"message": "bad temperature", "type": "invalid_request_error", "code": None}},
        ),
        out_line("b", response=False, error={"code": "batch_expired", "message": "not executed in time"}),
    ]
    outcomes = list(joiner.provider_lines(lines))
    by_line = {line: (record, ok) for line, record, ok in outcomes}
    assert by_line[9][1] and by_line[9][0]["usage"] == usage and by_line[9][0]["route"] == "batch"
    assert by_line[1][0]["code"] == "invalid_request_error" and by_line[1][0]["message"] == "bad temperature"
    assert by_line[1][0]["status_code"] == 400
    assert by_line[5][0]["code"] == "batch_expired"
    assert joiner.tally.cost_usd == pytest.approx((100 * 0.15 + 10 * 0.60) / 1e6 * 0.5)
    assert joiner.tally.cost_usd_if_realtime == pytest.approx(2 * joiner.tally.cost_usd)


def test_requests_the_provider_never_mentions_become_errors_not_silence(joiner):
    list(joiner.provider_lines([out_line("a", body={"usage": {}})]))
    missing = list(joiner.unanswered("missing_from_output", "no outcome"))
    assert sorted(line for line, _, _ in missing) == [5, 9, 12]
    assert joiner.tally.succeeded == 1 and joiner.tally.failed == 3


def test_unknown_and_repeated_custom_ids_are_ignored(joiner):
    outcomes = list(joiner.provider_lines([out_line("zzz", body={}), out_line("a", body={}), out_line("a", body={})]))
    assert [line for line, _, _ in outcomes] == [1]
