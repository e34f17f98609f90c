"""`batchline validate`: the pipeline's checks, every bad line listed, an exit status scripts can trust."""

from __future__ import annotations

import json
from pathlib import Path

from lines import BAD_LINES, chat, embedding, response
from typer.testing import CliRunner

from batchline_cli.cli import app

WIDE = {"COLUMNS": "250"}


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def small_lines_settings(tmp_path: Path) -> Path:
    """Shards of at most 1,024 bytes: a request line may be at most 1,023 bytes."""
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"context": {"batchline": {"shard_max_bytes": 1024}}}))
    return path


def mixed_file(tmp_path: Path) -> tuple[Path, list[tuple[int, str]]]:
    """Valid lines, a blank line, every kind of bad line, a duplicate and a line too long; and the expected errors."""
    lines = [chat("ok-1"), ""] + [raw for raw, _ in BAD_LINES]
    lines += [embedding("ok-2"), chat("ok-1", "same id again"), chat("long", "x " * 600), response("ok-3")]
    expected = [(3 + i, code) for i, (_, code) in enumerate(BAD_LINES)]
    after = 3 + len(BAD_LINES)
    expected += [(after + 1, "duplicate_custom_id"), (after + 2, "line_too_large")]
    return write(tmp_path, lines), expected


def test_every_bad_line_is_listed_with_its_line_number_and_code_and_the_exit_status_is_1(tmp_path):
    path, expected = mixed_file(tmp_path)

    result = CliRunner().invoke(
        app, ["validate", str(path), "--json", "--cdk-json", str(small_lines_settings(tmp_path))]
    )

    assert result.exit_code == 1, result.output
    listed = json.loads(result.stdout)
    assert [(bad["line"], bad["code"]) for bad in listed] == expected
    assert all(bad["message"] for bad in listed)
    duplicate = next(bad for bad in listed if bad["code"] == "duplicate_custom_id")
    assert duplicate["custom_id"] == "ok-1" and "line 1" in duplicate["message"]
    assert f"15 non-blank lines: 3 valid, {len(expected)} invalid" in result.stderr


def test_the_table_names_each_bad_line_and_ends_with_a_one_line_summary(tmp_path):
    path, expected = mixed_file(tmp_path)

    result = CliRunner().invoke(
        app, ["validate", str(path), "--cdk-json", str(small_lines_settings(tmp_path))], env=WIDE
    )

    assert result.exit_code == 1
    *table, summary = result.stdout.rstrip().splitlines()
    codes = {code for _, code in expected}
    rows = [line.split() for line in table if line.split() and line.split()[0].isdigit()]
    assert [(int(row[0]), next(word for word in row if word in codes)) for row in rows] == expected
    assert summary.startswith(f"15 non-blank lines: 3 valid, {len(expected)} invalid")


def test_a_clean_file_exits_0(tmp_path):
    path = write(tmp_path, [chat("c1"), "", embedding("e1"), response("r1")])

    result = CliRunner().invoke(app, ["validate", str(path)])

    assert result.exit_code == 0, result.output
    assert "3 non-blank lines: all valid" in result.stdout
    assert CliRunner().invoke(app, ["validate", str(path), "--json"]).stdout.strip() == "[]"


def test_a_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "missing.jsonl")])

    assert result.exit_code == 2
    assert "does not exist" in result.output
