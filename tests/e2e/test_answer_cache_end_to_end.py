"""Reruns that pay only for what changed: `batchline local run` in new processes on one --state-dir,
against one standalone emulator whose ledger records every request it billed, by custom_id.

The same file again sends nothing; the file with 10 lines changed sends exactly those 10 (the other 40
come from the answer cache, kept in the state directory's job table); a request repeated in a file
is sent once; --no-cache sends everything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cli_processes import BATCHLINE

from batchline_local.emulator import fetch_ledger

LINES = 50


def request(custom_id: str, text: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 20}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def results(out: Path) -> list[tuple[int, str, str]]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [(r["line"], r["custom_id"], r["response"]["choices"][0]["message"]["content"]) for r in records]


@pytest.mark.parametrize("mode", ["batch", "realtime"])
def test_a_rerun_sends_only_what_changed_and_a_repeat_once(tmp_path, emulator, mode):
    env = {**os.environ, "OPENAI_BASE_URL": f"{emulator}/v1", "OPENAI_API_KEY": "test"}
    state = tmp_path / "state"

    def run(path: Path, out: str, *extra: str) -> dict:
        command = [BATCHLINE, "local", "run", str(path), "--mode", mode, "--out", str(tmp_path / out)]
        command += ["--state-dir", str(state), *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads((tmp_path / out / "summary.json").read_text())

    def billed_since(count: int) -> list[str]:
        return sorted(str(entry["custom_id"] or "") for entry in fetch_ledger(emulator)[count:])

    lines = [request(f"k-{i}", f"Classify review {i}: the parcel came late, {i} days.") for i in range(LINES)]
    path = write(tmp_path / "reviews.jsonl", lines)

    first = run(path, "out1")
    assert len(fetch_ledger(emulator)) == LINES
    assert first["cache_kept"] == LINES

    # The same file again, in a new process: its job resumes, nothing is sent, the same table comes back.
    again = run(path, "out2")
    assert len(fetch_ledger(emulator)) == LINES, "the same run again sends zero requests"
    assert results(tmp_path / "out2") == results(tmp_path / "out1")
    assert again["succeeded"] == LINES

    # Ten lines changed: a new job, and only those ten are sent; the other forty come from the cache.
    changed = list(lines)
    changed_ids = [f"k-{i}" for i in range(0, LINES, 5)]
    for i in range(0, LINES, 5):
        changed[i] = request(f"k-{i}", f"Classify review {i}: it came broken.")
    before = len(fetch_ledger(emulator))
    third = run(write(path, changed), "out3")
    if mode == "realtime":  # the realtime route's ledger names no custom_id: count them
        assert len(fetch_ledger(emulator)) - before == 10
    else:
        assert billed_since(before) == sorted(changed_ids), "exactly the 10 changed lines are sent"
    assert (third["cached"], third["succeeded"], third.get("unaccounted_lines", 0)) == (40, LINES, 0)
    assert third["cache_saved_usd"] > 0
    kept = [row for row in results(tmp_path / "out3") if row[1] not in changed_ids]
    assert kept == [row for row in results(tmp_path / "out1") if row[1] not in changed_ids]

    # A request repeated in one file is sent once; each repeat gets the answer on its own line.
    repeated = [request(f"d-{i}", "Classify review: the same words, three times.") for i in range(3)]
    before = len(fetch_ledger(emulator))
    fourth = run(write(tmp_path / "repeats.jsonl", [*changed, *repeated]), "out4")
    assert len(fetch_ledger(emulator)) - before == 1
    assert (fourth["cached"], fourth["duplicates"], fourth["succeeded"]) == (LINES, 2, LINES + 3)
    tail = results(tmp_path / "out4")[-3:]
    assert [(line, cid) for line, cid, _ in tail] == [(51, "d-0"), (52, "d-1"), (53, "d-2")]
    assert len({answer for _, _, answer in tail}) == 1

    # --no-cache: everything is sent, repeats too.
    before = len(fetch_ledger(emulator))
    run(write(tmp_path / "no-cache.jsonl", repeated), "out5", "--no-cache")
    assert len(fetch_ledger(emulator)) - before == 3
