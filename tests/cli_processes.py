"""The real CLI in subprocesses, against a standalone emulator whose ledger outlives the runs (as a
user's provider does): its input files, its emulator, what the emulator holds."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from batchline_local.emulator import fetch_ledger
from batchline_local.local_stack import free_port

BATCHLINE = str(Path(sys.executable).with_name("batchline"))


def ctrl_c_reaches_it() -> None:
    """Popen's preexec_fn: a process started where SIGINT is ignored (a pytest-xdist worker, a shell's
    background job) inherits that, and would not get the Ctrl-C that a test sends it as SIGINT."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


LINES = 200


def write_input(path: Path) -> Path:
    with path.open("w") as handle:
        for i in range(LINES):
            words = " ".join(f"word{(i * 7 + j) % 97}" for j in range(5 + i % 40))
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": words}], "max_tokens": 20}
            handle.write(
                json.dumps({"custom_id": f"k-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
            )
            handle.write("\n")
    return path


@contextlib.contextmanager
def standalone_emulator(tmp_path: Path) -> Iterator[str]:
    """`batchline emulator` in a subprocess, at 600 RPM and 60k TPM; yields its root URL."""
    port = free_port()
    # batches stay in progress for 8 s: long enough to kill a batch run while its batch is out
    settings = tmp_path / "emulator.json"
    settings.write_text(json.dumps({"context": {"batchline": {"emulator": {"in_progress_seconds": 8}}}}))
    process = subprocess.Popen(
        [BATCHLINE, "emulator", "--port", str(port), "--rpm", "600", "--tpm", "60000", "--latency", "0.3"]
        + ["--cdk-json", str(settings)],
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
    try:
        yield root
    finally:
        process.kill()
        process.wait()


def emulator_batches(root: str, *, timeout: float = 30.0) -> list[dict]:
    """Every batch the emulator at `root` holds, newest first. The timeout is generous: on a loaded
    2-core machine the emulator may be busy answering a run's calls for a few seconds."""
    request = urllib.request.Request(f"{root}/v1/batches?limit=100", headers={"Authorization": "Bearer test"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["data"]
