"""A local stack as `batchline local up` runs it, for tests of the job commands.

LocalAws (moto serving the real state machine, the handlers in-process) and the OpenAI emulator,
described by a state file; the commands reach the stack only through that file and moto's HTTP
endpoint, with boto3, as they reach AWS. One stack per process at a time: moto's backends are
shared by every server in a process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchline.settings import Settings
from typer.testing import CliRunner, Result

from batchline_cli.cli import app
from batchline_cli.stack_target import write_state
from batchline_local.emulator import EmulatorServer, Faults
from batchline_local.local_run import quiet_service_logs
from batchline_local.local_stack import LocalAws
from batchline_local.local_up import stack_state

PACE = {"validating_seconds": 0, "in_progress_seconds": 0.2, "finalizing_seconds": 0}
# The cache is off: these tests' files repeat request bodies on purpose, and every line must be sent.
FAST = {
    "local_poll_seconds": 1,
    "poll_seconds": 1,
    "max_poll_seconds": 1,
    "shard_max_requests": 4,
    "emulator": PACE,
    "cache": False,
}


@dataclass
class Stack:
    aws: LocalAws
    server: EmulatorServer
    state_file: Path

    def run(self, *args: str, code: int = 0) -> Result:
        """A batchline command against this stack; fails the test on another exit code."""
        result = CliRunner().invoke(app, [*args, "--state-file", str(self.state_file)])
        if result.exit_code != code and result.exc_info and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(*result.exc_info))
        else:
            trace = ""
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}{trace}"
        return result

    def status(self, job_id: str, *more: str) -> dict:
        return json.loads(self.run("status", job_id, "--json", *more).stdout)


@contextlib.contextmanager
def running_stack(tmp_path: Path, settings: Settings) -> Iterator[Stack]:
    quiet_service_logs()
    with (
        EmulatorServer(settings=settings, faults=Faults.parse("")) as server,
        LocalAws(settings, openai_base_url=server.base_url, openai_api_key="k", poll_seconds=1) as aws,
    ):
        state_file = tmp_path / "state" / "local.json"
        write_state(state_file, stack_state(aws, openai_base_url=server.base_url, openai_api_key="k"))
        yield Stack(aws, server, state_file)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]
