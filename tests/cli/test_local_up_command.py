"""`batchline local up`: the stack runs in its own process until Ctrl-C, found by the others through its state file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_processes import ctrl_c_reaches_it
from typer.testing import CliRunner

from batchline_cli.cli import app

pytestmark = pytest.mark.e2e


def test_local_up_serves_until_interrupted_and_removes_its_state_file(tmp_path):
    state_file = tmp_path / "up.json"
    env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "ERROR"}
    command = [str(Path(sys.executable).parent / "batchline"), "local", "up", "--state-file", str(state_file)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches_it
    )
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "local up wrote no state file"
            time.sleep(0.2)
        listed = CliRunner().invoke(app, ["status", "--state-file", str(state_file)])
        assert listed.exit_code == 0 and "no jobs yet in the local stack" in listed.stderr
        twice = CliRunner().invoke(app, ["local", "up", "--state-file", str(state_file)])
        assert twice.exit_code == 1 and "already running" in twice.stderr
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "local stack stopped" in stderr
    assert not state_file.exists()
    gone = CliRunner().invoke(app, ["status", "--local", "--state-file", str(state_file)])
    assert gone.exit_code == 1 and "no local stack" in gone.stderr
