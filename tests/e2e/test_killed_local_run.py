"""kill -9 of a `batchline local run`, then the same command: nothing billed twice, every line once.

Both runs are the real CLI in a subprocess, against one emulator that outlives them (as a user's
provider does) and whose ledger records every request it billed, by custom_id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from cli_processes import BATCHLINE, LINES, emulator_batches, write_input

from batchline_local.emulator import billed_twice, fetch_ledger


def test_a_killed_realtime_run_run_again_bills_nothing_twice_and_accounts_for_every_line(tmp_path, emulator):
    path = write_input(tmp_path / "killed.jsonl")
    settings = tmp_path / "cdk.json"
    # a short worker timeout: what a killed run had in flight is known dead 30 s after the kill
    settings.write_text(json.dumps({"context": {"batchline": {"realtime": {"worker_timeout_seconds": 30}}}}))
    command = [BATCHLINE, "local", "run", str(path), "--mode", "realtime", "--out", str(tmp_path / "out")]
    command += ["--cdk-json", str(settings), "--state-dir", str(tmp_path / "state")]
    env = {**os.environ, "OPENAI_BASE_URL": f"{emulator}/v1", "OPENAI_API_KEY": "test"}

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(fetch_ledger(emulator)) < 40 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    billed_before = len(fetch_ledger(emulator))
    assert 40 <= billed_before < LINES, "the run was not killed half way"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)

    ledger = fetch_ledger(emulator)
    assert billed_twice(ledger) == {}
    out = tmp_path / "out"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in results + errors) == sorted(f"k-{i}" for i in range(LINES))
    assert {e["code"] for e in errors} <= {"in_doubt"}  # sent before the kill, answer lost: not paid again
    assert rerun.returncode == (1 if errors else 0), rerun.stdout + rerun.stderr  # 1: lines without an answer
    assert len(ledger) <= LINES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recovery"]["resumes"] == 1, "the rerun resumed the killed run's job"


def test_a_killed_batch_run_run_again_adopts_its_batch_and_counts_the_resume(tmp_path, emulator):
    path = write_input(tmp_path / "killed-batch.jsonl")
    command = [BATCHLINE, "local", "run", str(path), "--mode", "batch", "--out", str(tmp_path / "out")]
    command += ["--state-dir", str(tmp_path / "state")]
    env = {**os.environ, "OPENAI_BASE_URL": f"{emulator}/v1", "OPENAI_API_KEY": "test"}

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not emulator_batches(emulator) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # the shard records its batch id as the batch is created: give it a moment
    first.send_signal(signal.SIGKILL)
    first.wait()
    submitted = emulator_batches(emulator)
    assert len(submitted) == 1 and submitted[0]["status"] in ("validating", "in_progress"), "killed with its batch out"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    adopted = [batch["id"] for batch in emulator_batches(emulator)]
    assert adopted == [submitted[0]["id"]], "the batch was adopted, not sent again"
    assert billed_twice(fetch_ledger(emulator)) == {}
    out = tmp_path / "out"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in results) == sorted(f"k-{i}" for i in range(LINES))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recovery"]["resumes"] == 1, "the rerun resumed the killed run's job"
