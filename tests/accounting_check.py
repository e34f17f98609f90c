"""The invariant users rely on: every non-blank input line exactly once in results or errors."""

from __future__ import annotations

import json
from pathlib import Path

from batchline.domain.request_line import iter_physical_lines


def assert_every_line_accounted_for(input_path: Path, out_dir: Path) -> tuple[list[dict], list[dict]]:
    lines = dict(iter_physical_lines([input_path.read_bytes()]))
    # JSON Lines end at "\n" only: str.splitlines would also cut at a U+2028 inside a string.
    results = [json.loads(raw) for raw in (out_dir / "results.jsonl").read_bytes().split(b"\n") if raw]
    errors = [json.loads(raw) for raw in (out_dir / "errors.jsonl").read_bytes().split(b"\n") if raw]
    seen = [record["line"] for record in results + errors]
    assert len(seen) == len(set(seen)), "a line appears more than once across results and errors"
    assert set(seen) == set(lines), (
        f"lines missing: {sorted(set(lines) - set(seen))[:10]}, extra: {sorted(set(seen) - set(lines))[:10]}"
    )
    assert [r["line"] for r in results] == sorted(r["line"] for r in results), "results are not in input order"
    assert [e["line"] for e in errors] == sorted(e["line"] for e in errors), "errors are not in input order"
    for record in results:
        assert json.loads(lines[record["line"]])["custom_id"] == record["custom_id"], (
            "a result joined to the wrong line"
        )
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["succeeded"] == len(results)
    assert summary["failed"] + summary["invalid"] == len(errors)
    assert summary["input_lines"] == len(lines)
    return results, errors
