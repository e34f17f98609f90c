"""Structured answers end to end: a file of requests asking for JSON Schemas, run locally with the
emulator breaking a share of the answers (`schema_invalid`), on the batch and on the realtime route.

Every answer in results.jsonl follows its request's schema and carries it parsed; the answers that
did not were asked again, on the same route, and counted; what failed on every attempt is in
errors.jsonl with the validation's message; no line is lost, and what was billed is what is counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from accounting_check import assert_every_line_accounted_for
from batchline.settings import load_settings

from batchline_local.emulator import EmulatorServer
from batchline_local.emulator.faults import Faults, hits
from batchline_local.local_run import run_local_job

pytestmark = pytest.mark.e2e

REQUESTS = Path(__file__).parent / "data" / "structured_requests.jsonl"
SHARE = 0.3
FAST = {
    "local_poll_seconds": 1,
    "emulator": {"validating_seconds": 0, "in_progress_seconds": 0.2, "finalizing_seconds": 0},
}


def expected(custom_ids: list[str], attempts: int) -> tuple[int, set[str]]:
    """(answers asked again, custom_ids failing every attempt), as the fault draws them per attempt."""
    retries, failing = 0, set()
    for custom_id in custom_ids:
        failed = 0
        while failed < attempts and hits(SHARE, "schema_invalid", custom_id, str(failed)):
            failed += 1
        retries += min(failed, attempts - 1)
        if failed == attempts:
            failing.add(custom_id)
    return retries, failing


@pytest.mark.parametrize(("mode", "attempts"), [("batch", 3), ("realtime", 3), ("batch", 2), ("realtime", 2)])
def test_answers_off_their_schema_are_asked_again_and_every_result_follows_its_schema(
    tmp_path, monkeypatch, mode, attempts
):
    requests = {json.loads(raw)["custom_id"]: json.loads(raw) for raw in REQUESTS.read_text().splitlines() if raw}
    # The attempts an answer gets: rounds on the batch route, answers on the realtime route (3 by default).
    settings = load_settings(
        {**FAST, "recovery": {"max_attempts": attempts}, "realtime": {"schema_attempts": attempts}}
    )
    with EmulatorServer(settings=settings, faults=Faults.parse(f"schema_invalid={SHARE}")) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "key-for-the-emulator")
        result = run_local_job(REQUESTS, tmp_path / "out", settings, mode=mode)
        ledger = server.emulator.ledger()

    assert result.execution_status == "SUCCEEDED"
    results, errors = assert_every_line_accounted_for(REQUESTS, tmp_path / "out")
    assert len(results) + len(errors) == len(requests), "nothing lost"
    for record in results:
        schema = requests[record["custom_id"]]["body"]["response_format"]["json_schema"]["schema"]
        content = record["response"]["choices"][0]["message"]["content"]
        assert record["parsed"] == json.loads(content) and record["route"] == mode
        jsonschema.validate(record["parsed"], schema)

    retries, failing = expected(list(requests), attempts)
    assert 0 < retries, "the fault broke some answers"
    assert {e["custom_id"] for e in errors} == failing
    for error in errors:
        assert error["code"] == "schema_invalid" and error["message"].startswith(("$", "not JSON"))
        assert error["usage"]["prompt_tokens"] > 0, "billed: its usage goes with it"
    summary = result.summary
    assert summary["recovery"]["schema_retries"] == retries
    assert summary["error_codes"] == ({"schema_invalid": len(failing)} if failing else {})
    # Every answer billed, the ones off their schema too, is in the tokens and the cost: none twice.
    assert len(ledger) == len(requests) + retries
    assert summary["input_tokens"] == sum(entry["prompt_tokens"] for entry in ledger)
    assert summary["output_tokens"] == sum(entry["completion_tokens"] for entry in ledger)
    report = (tmp_path / "out" / "report.html").read_text()
    assert "answers asked again for failing their schema" in report
