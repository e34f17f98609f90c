"""Ctrl-C on `batchline local run`: the outputs so far, what still runs, how to go on; never a line twice.

The real CLI in a subprocess gets SIGINT as a terminal's Ctrl-C sends it, against a standalone
emulator whose ledger records every request it billed (see cli_processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from cli_processes import BATCHLINE, LINES, ctrl_c_reaches_it, emulator_batches, write_input

from batchline_local.emulator import billed_twice, fetch_ledger

INTERRUPTED_EXIT = 130


def _command(path: Path, tmp_path: Path, mode: str, *extra: str) -> list[str]:
    command = [BATCHLINE, "local", "run", str(path), "--mode", mode, "--out", str(tmp_path / "out")]
    return [*command, "--state-dir", str(tmp_path / "state"), *extra]


def _interrupt_when(command: list[str], env: dict, ready) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command`, send it SIGINT once `ready()` holds; (the finished process, seconds it took to stop)."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches_it
    )
    deadline = time.monotonic() + 120
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    stdout, stderr = process.communicate(timeout=120)
    stopped = time.monotonic() - interrupted_at
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), stopped


def _outputs(out: Path) -> tuple[list[dict], list[dict], dict]:
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    return results, errors, json.loads((out / "summary.json").read_text())


def _env(emulator: str) -> dict:
    return {**os.environ, "OPENAI_BASE_URL": f"{emulator}/v1", "OPENAI_API_KEY": "test", "COLUMNS": "200"}


def test_ctrl_c_on_a_realtime_run_stops_sending_writes_the_outputs_so_far_and_the_rerun_sends_the_rest(
    tmp_path, emulator
):
    path = write_input(tmp_path / "interrupted.jsonl")
    command = _command(path, tmp_path, "realtime")

    first, stopped = _interrupt_when(command, _env(emulator), lambda: len(fetch_ledger(emulator)) >= 40)

    assert first.returncode == INTERRUPTED_EXIT, first.stdout + first.stderr
    assert stopped < 30, f"took {stopped:.0f} s to stop"
    results, errors, summary = _outputs(tmp_path / "out")
    assert summary["status"] == "interrupted" and 0 < summary["pending"] < LINES
    assert len(results) + len(errors) + summary["pending"] == LINES
    assert len({r["custom_id"] for r in results + errors}) == len(results) + len(errors)
    billed_at_stop = len(fetch_ledger(emulator))
    time.sleep(2)
    assert len(fetch_ledger(emulator)) == billed_at_stop, "nothing is sent once the run stopped"
    assert "state is kept in" in first.stderr and "goes on where it stopped" in first.stderr

    rerun = subprocess.run([*command, "--resume"], env=_env(emulator), capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert billed_twice(fetch_ledger(emulator)) == {}
    results, errors, summary = _outputs(tmp_path / "out")
    assert sorted(r["custom_id"] for r in results + errors) == sorted(f"k-{i}" for i in range(LINES))
    assert summary["status"] == "succeeded" and summary["recovery"]["resumes"] == 1


def test_ctrl_c_on_a_batch_run_names_the_batch_left_running_and_the_rerun_collects_it(tmp_path, emulator):
    path = write_input(tmp_path / "interrupted-batch.jsonl")
    command = _command(path, tmp_path, "batch")

    first, _ = _interrupt_when(command, _env(emulator), lambda: bool(emulator_batches(emulator)))

    assert first.returncode == INTERRUPTED_EXIT, first.stdout + first.stderr
    [batch] = emulator_batches(emulator)
    assert batch["status"] in ("validating", "in_progress")
    assert f"still running at the provider (it bills when it completes): batch {batch['id']}" in first.stderr
    assert "--cancel-on-interrupt" in first.stderr
    results, errors, summary = _outputs(tmp_path / "out")
    assert summary["status"] == "interrupted"
    assert len(results) + len(errors) + summary["pending"] == LINES and summary["pending"] > 0

    rerun = subprocess.run(command, env=_env(emulator), capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [b["id"] for b in emulator_batches(emulator)] == [batch["id"]], "collected, not sent again"
    results, _, summary = _outputs(tmp_path / "out")
    assert len(results) == LINES and summary["recovery"]["resumes"] == 1


def test_with_cancel_on_interrupt_ctrl_c_cancels_the_batch_and_writes_the_cancelled_jobs_outputs(tmp_path, emulator):
    path = write_input(tmp_path / "cancelled.jsonl")
    command = _command(path, tmp_path, "batch", "--cancel-on-interrupt")

    first, _ = _interrupt_when(command, _env(emulator), lambda: bool(emulator_batches(emulator)))

    assert first.returncode == INTERRUPTED_EXIT, first.stdout + first.stderr
    [batch] = emulator_batches(emulator)
    assert batch["status"] in ("cancelling", "cancelled")
    assert f"cancelled batch {batch['id']}" in first.stderr
    assert "still running at the provider" not in first.stderr
    results, errors, summary = _outputs(tmp_path / "out")
    assert summary["status"] == "cancelled"
    assert len(results) + len(errors) == LINES


def test_past_its_timeout_a_run_stops_as_on_ctrl_c_and_says_it_timed_out(tmp_path, emulator):
    path = write_input(tmp_path / "timed-out.jsonl")
    command = _command(path, tmp_path, "batch", "--timeout", "4")

    run = subprocess.run(command, env=_env(emulator), capture_output=True, text=True, timeout=120)

    assert run.returncode == INTERRUPTED_EXIT, run.stdout + run.stderr
    results, errors, summary = _outputs(tmp_path / "out")
    assert summary["status"] == "interrupted" and "did not finish within 4 s" in summary["message"]
    assert len(results) + len(errors) + summary["pending"] == LINES
    assert "goes on where it stopped" in run.stderr


def test_resume_with_no_job_of_this_file_in_the_state_directory_sends_nothing_and_says_so(tmp_path, emulator):
    path = write_input(tmp_path / "never-run.jsonl")

    run = subprocess.run(
        _command(path, tmp_path, "batch", "--resume"), env=_env(emulator), capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 2, run.stdout + run.stderr
    assert "nothing to resume" in run.stderr and "Run without --resume to start it" in run.stderr
    assert fetch_ledger(emulator) == [] and emulator_batches(emulator) == []
