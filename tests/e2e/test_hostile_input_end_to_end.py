"""A file of lines a lenient parser accepts and the provider does not, on both routes.

Twenty plain lines and one of every hostile case (tests/hostile_lines.py): nesting deeper than
any parser allows, raw line separators and CR, ids of white space, unicode and escapes, and
parameters, context lengths and model kinds the API itself refuses. Every line must come out
once, each plain or odd-but-valid line answered, each refusal reported with its own line number,
and no request billed twice.
"""

from __future__ import annotations

import time

import pytest
from accounting_check import assert_every_line_accounted_for
from batchline.settings import load_settings
from hostile_lines import ANSWERED, write_hostile_file

from batchline_local.emulator import EmulatorServer
from batchline_local.local_run import run_local_job

pytestmark = pytest.mark.e2e

FAST = {
    "local_poll_seconds": 1,
    "cache": False,  # these files repeat request bodies on purpose: every line is sent (the cache has its own tests)
    "shard_max_requests": 8,
    "emulator": {"validating_seconds": 0, "in_progress_seconds": 0.2, "finalizing_seconds": 0},
}


@pytest.mark.parametrize("mode", ["batch", "realtime"])
def test_every_hostile_line_is_answered_or_refused_with_its_line_number_on_both_routes(tmp_path, mode):
    path = tmp_path / "hostile.jsonl"
    expected = dict(write_hostile_file(path))
    settings = load_settings(FAST)
    started = time.monotonic()
    with EmulatorServer(settings=settings) as server:
        result = run_local_job(path, tmp_path / "out", settings, openai=(server.base_url, "k"), mode=mode)
        billed = [entry["custom_id"] for entry in server.emulator.ledger()]
    elapsed = time.monotonic() - started

    assert result.execution_status == "SUCCEEDED"
    results, errors = assert_every_line_accounted_for(path, tmp_path / "out")
    answered = {number for number, outcome in expected.items() if outcome == ANSWERED}
    assert {r["line"] for r in results} == answered and len(answered) == 27
    assert {r["route"] for r in results} == {mode}
    assert {e["line"]: e["code"] for e in errors} == {n: code for n, code in expected.items() if code != ANSWERED}
    assert all(e["stage"] == "validation" for e in errors)
    assert sorted(billed) == sorted(r["custom_id"] for r in results)  # every answer billed once, no refusal sent
    assert {"   ", "café-ü-日本-🙂", "line\nbreak", "tab\tand\u2028sep", "sep\u2028id"} <= set(billed)
    assert elapsed < 180, f"the {mode} run took {elapsed:.0f} s"
