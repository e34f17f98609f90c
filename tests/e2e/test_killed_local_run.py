"""kill -9 of a realtime `batchline local run`, then the same command: nothing billed twice, every line once.

Both runs are the real CLI in a subprocess, against one emulator that outlives them (as a user's
provider does) and whose ledger records every request it billed, by custom_id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchline_local.emulator import billed_twice, fetch_ledger
from batchline_local.local_stack import free_port

BATCHLINE = str(Path(sys.executable).with_name("batchline"))
LINES = 200


def _write_input(path: Path) -> Path:
    with path.open("w") as handle:
        for i in range(LINES):
            words = " ".join(f"word{(i * 7 + j) % 97}" for j in range(5 + i % 40))
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": words}], "max_tokens": 20}
            handle.write(
                json.dumps({"custom_id": f"k-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
            )
            handle.write("\n")
    return path


@pytest.fixture
def emulator():
    port = free_port()
    process = subprocess.Popen(
        [BATCHLINE, "emulator", "--port", str(port), "--rpm", "600", "--tpm", "60000", "--latency", "0.3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            fetch_ledger(root, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)
    yield root
    process.kill()
    process.wait()


def test_a_killed_realtime_run_run_again_bills_nothing_twice_and_accounts_for_every_line(tmp_path, emulator):
    path = _write_input(tmp_path / "killed.jsonl")
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

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    ledger = fetch_ledger(emulator)
    assert billed_twice(ledger) == {}
    out = tmp_path / "out"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in results + errors) == sorted(f"k-{i}" for i in range(LINES))
    assert {e["code"] for e in errors} <= {"in_doubt"}  # sent before the kill, answer lost: not paid again
    assert len(ledger) <= LINES
