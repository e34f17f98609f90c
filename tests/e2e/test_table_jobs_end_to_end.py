"""A table in, a table out, through the real CLI: `batchline local run DATA --prompt ... --schema ...`
against a standalone emulator whose ledger says what was sent (and billed).

The CSV is the kind a user exports: quoted commas and quotes, answers over two lines, unicode, empty
cells, and a row whose template fails. The results table must have one row per input row, in input
order, each joined to its own columns, every answer validated against the schema, and the failing
row reported with its number.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
from cli_processes import BATCHLINE

from batchline_local.emulator import fetch_ledger

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "topic": {"type": "string"},
    },
    "required": ["sentiment", "topic"],
    "additionalProperties": False,
}
# `stars` of 0 makes the template divide by zero: that row, and only that one, cannot be rendered.
PROMPT = "Classify this {{ area }} feedback ({{ 10 // (stars | int) }} points): {{ text }}"
ROWS = [
    ("a-1", "app", "5", 'Great app, "really" great, fast'),
    ("a-2", "billing", "1", "Charged twice,\nplease refund"),
    ("a-3", "delivery", "3", "Paket kam zu spät 📦 — schade"),
    ("a-4", "app", "2", ""),
    ("a-5", "support", "0", "this row's template divides by zero"),
    ("a-6", "", "4", "no area given"),
    ("a-7", "app", "5", "Line\u2028separator inside"),
]
FAILING_ROW = 5


def write_table(path: Path, rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "area", "stars", "text"])
        writer.writerows(rows)
    return path


def run_table_job(tmp_path: Path, emulator: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    command = [BATCHLINE, "local", "run", str(data), "--prompt", PROMPT, "--model", "gpt-4o-mini"]
    command += ["--schema", str(schema), "--id-column", "id", "--out", str(out), "--state-dir", str(tmp_path / "st")]
    env = {**os.environ, "OPENAI_BASE_URL": f"{emulator}/v1", "OPENAI_API_KEY": "test"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_a_csv_with_a_schema_comes_back_as_one_validated_row_per_input_row(tmp_path, emulator):
    data = write_table(tmp_path / "feedback.csv", ROWS)

    run = run_table_job(tmp_path, emulator, data, tmp_path / "out")

    assert run.returncode == 1, run.stdout + run.stderr  # 1: done, one row without an answer
    table = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert [row["id"] for row in table] == [row[0] for row in ROWS], "one row per input row, in input order"
    assert [row["text"] or "" for row in table] == [row[3] for row in ROWS], "the input's own text column"
    assert table[1]["text"].count("\n") == 1 and table[5]["area"] in ("", None), "each row joined to its own columns"
    for row in table:
        if row["id"] == f"a-{FAILING_ROW}":
            assert row["status"] == "invalid" and row["error_code"] == "row_error"
            assert f"row {FAILING_ROW}" in row["error"], row["error"]
            continue
        assert row["status"] == "succeeded", row
        jsonschema.validate(json.loads(row["parsed"]), SCHEMA)
        assert row["custom_id"] == row["id"] and row["route"] == "batch" and row["input_tokens"] > 0
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["code"]) for e in errors] == [(FAILING_ROW, "row_error")]
    billed = [entry["custom_id"] for entry in fetch_ledger(emulator)]
    assert sorted(billed) == sorted(row[0] for row in ROWS if row[0] != f"a-{FAILING_ROW}")

    again = run_table_job(tmp_path, emulator, data, tmp_path / "again")

    assert again.returncode == 1, again.stdout + again.stderr
    assert len(fetch_ledger(emulator)) == len(billed), "the same table again sends nothing"
    assert pq.read_table(tmp_path / "again" / "results.parquet").to_pylist() == table


@pytest.mark.timeout(600)
def test_the_readme_quick_start_gives_a_validated_answer_for_every_row_of_the_example(tmp_path):
    from test_readme_commands import README, README_TABLE_COMMAND

    assert README_TABLE_COMMAND in README.read_text(), "the README shows this command"
    repo = README.parent
    command = shlex.split(README_TABLE_COMMAND)
    command[command.index("--out") + 1] = str(tmp_path / "feedback")
    run = subprocess.run(
        [BATCHLINE, *command[1:], "--state-dir", str(tmp_path / "state")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=500,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    schema = json.loads((repo / "examples" / "feedback-schema.json").read_text())
    with (repo / "examples" / "feedback.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    table = pq.read_table(tmp_path / "feedback" / "results.parquet").to_pylist()
    assert [row["id"] for row in table] == [row["id"] for row in rows]
    assert [row["text"] or "" for row in table] == [row["text"] for row in rows]
    for row in table:
        assert row["status"] == "succeeded", row
        jsonschema.validate(json.loads(row["parsed"]), schema)
    assert "results.parquet" in run.stdout + run.stderr, "the summary names the table"


@pytest.mark.timeout(900)
def test_a_changed_table_sends_only_its_changed_rows_and_keeps_the_others_answers(tmp_path, emulator):
    first = run_table_job(tmp_path, emulator, write_table(tmp_path / "feedback.csv", ROWS), tmp_path / "out")
    assert first.returncode == 1, first.stdout + first.stderr
    before = len(fetch_ledger(emulator))
    changed = list(ROWS)
    changed[0] = (*ROWS[0][:3], "Great app, now even faster")
    changed[6] = (*ROWS[6][:3], "A changed seventh row")

    second = run_table_job(tmp_path, emulator, write_table(tmp_path / "feedback.csv", changed), tmp_path / "out2")

    assert second.returncode == 1, second.stdout + second.stderr
    billed = [entry["custom_id"] for entry in fetch_ledger(emulator)[before:]]
    assert sorted(billed) == ["a-1", "a-7"], "only the changed rows are sent again"
    table = pq.read_table(tmp_path / "out2" / "results.parquet").to_pylist()
    assert [row["id"] for row in table] == [row[0] for row in ROWS]
    assert {row["id"]: row["route"] for row in table if row["status"] == "succeeded"} == {
        "a-1": "batch", "a-2": "cache", "a-3": "cache", "a-4": "cache", "a-6": "cache", "a-7": "batch",
    }  # fmt: skip
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["cached"] == 4 and summary["cache_saved_usd"] > 0
