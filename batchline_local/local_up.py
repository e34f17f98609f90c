"""`batchline local up`: the whole stack on this machine, kept running for the job commands.

moto serves S3, DynamoDB, Lambda, Step Functions, SQS and EventBridge on a localhost port, with
the project's handlers behind its Lambda API and the realtime event source polling its queue
(LocalAws); the OpenAI emulator serves on another port (unless OPENAI_BASE_URL names an
endpoint). A state file tells `batchline submit/status/results/cancel` where they are; it is
removed when the stack stops. Everything lives in this process's memory and goes with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from batchline.settings import Settings
from rich.console import Console

from batchline_cli.stack_target import TargetError, is_listening, read_state, write_state
from batchline_local.emulator import EmulatorServer, Faults
from batchline_local.local_run import quiet_service_logs
from batchline_local.local_stack import LocalAws

EMULATOR_KEY = "local-emulator-key"


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def openai_for_local_stack(
    settings: Settings, *, port: int, faults: Faults | None
) -> Iterator[tuple[str, str | None, str]]:
    """(base_url, key to write in the state file, key for the functions): OPENAI_* when set, else the emulator.

    A real key is never written to the state file: the commands read it from OPENAI_API_KEY.
    """
    base_url = os.environ.get("OPENAI_BASE_URL")
    if base_url:
        if faults is not None:
            raise TargetError("faults are injected by the built-in emulator: unset OPENAI_BASE_URL to use them")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise TargetError("OPENAI_BASE_URL is set but OPENAI_API_KEY is not: set both, or neither for the emulator")
        yield base_url, None, key
        return
    with EmulatorServer(settings=settings, faults=faults, port=port) as emulator:
        yield emulator.base_url, EMULATOR_KEY, EMULATOR_KEY


def stack_state(aws: LocalAws, *, openai_base_url: str, openai_api_key: str | None) -> dict:
    """What the job commands need to reach this stack, as the state file holds it."""
    return {
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "endpoint_url": aws.endpoint,
        "region": aws.settings.region,
        "input_bucket": aws.names.input_bucket,
        "output_bucket": aws.names.output_bucket,
        "table": aws.names.table,
        "state_machine_arn": aws.state_machine_arn,
        "output_prefix": aws.settings.output_prefix,
        "openai_base_url": openai_base_url,
        "openai_api_key": openai_api_key,
    }


def check_no_stack_running(state_file: Path) -> None:
    state = read_state(state_file)
    if state is not None and is_listening(state["endpoint_url"]):
        raise TargetError(
            f"a local stack is already running (process {state.get('pid')}, {state['endpoint_url']}, state in "
            f"{state_file}): use it, stop it with Ctrl-C in its terminal, or start another with --state-file"
        )


@contextlib.contextmanager
def local_stack_up(
    settings: Settings,
    *,
    state_file: Path,
    port: int | None = None,
    emulator_port: int | None = None,
    faults: Faults | None = None,
) -> Iterator[dict]:
    """Start the emulator and LocalAws, write the state file, and yield its content; undo all on exit."""
    check_no_stack_running(state_file)
    for name, chosen in (("--port", port), ("--emulator-port", emulator_port)):
        if chosen and not port_free(chosen):
            raise TargetError(f"port {chosen} is in use: choose another with {name}, or leave it out for a free one")
    quiet_service_logs()
    with (
        openai_for_local_stack(settings, port=emulator_port or 0, faults=faults) as (base_url, written_key, key),
        LocalAws(
            settings,
            openai_base_url=base_url,
            openai_api_key=key,
            poll_seconds=settings.local_poll_seconds,
            port=port,
        ) as aws,
    ):
        state = stack_state(aws, openai_base_url=base_url, openai_api_key=written_key)
        write_state(state_file, state)
        try:
            yield state
        finally:
            current = read_state(state_file) if state_file.exists() else None
            if current is not None and current.get("pid") == state["pid"]:
                state_file.unlink()


def serve_until_interrupted(
    settings: Settings,
    *,
    state_file: Path,
    console: Console,
    port: int | None = None,
    emulator_port: int | None = None,
    faults: Faults | None = None,
) -> None:
    """Run the local stack until Ctrl-C (or SIGTERM), then stop it and remove the state file."""
    stopping = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if in_main_thread else None
    running = contextlib.ExitStack()
    try:
        with console.status("starting moto, the state machine and the OpenAI emulator"):
            state = running.enter_context(
                local_stack_up(settings, state_file=state_file, port=port, emulator_port=emulator_port, faults=faults)
            )
        say = {"markup": False, "highlight": False, "soft_wrap": True}
        console.print(
            f"batchline local stack up: AWS (moto) at {state['endpoint_url']}, OpenAI at {state['openai_base_url']}",
            **say,
        )
        console.print(f"state in {state_file}: the job commands find the stack there. In another terminal:", **say)
        console.print("  batchline submit examples/feedback-1k.jsonl", style="cyan", **say)
        console.print("  batchline status JOB --watch", style="cyan", **say)
        console.print("Ctrl-C stops it; its jobs, buckets and table live in memory and go with it.", **say)
        with contextlib.suppress(KeyboardInterrupt):
            while not stopping.wait(0.5):
                pass
    finally:
        with console.status("stopping the local stack"):
            running.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    console.print("local stack stopped")
