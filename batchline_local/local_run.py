"""`batchline local run`: one command that runs a whole job on this machine.

Starts moto (with the project's handlers behind its Lambda API) and, unless OPENAI_BASE_URL
points elsewhere, the built-in OpenAI emulator; uploads the input so that the object-created
trigger starts the state machine; shows progress; copies the three outputs and the job's
report.html into the chosen directory and prints a short account of the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batchline.adapters.job_store import JobStore
from batchline.datasets.spec import TableSpec
from batchline.domain.layout import JobLayout
from batchline.domain.statuses import BATCH_ENDED, ShardStatus
from batchline.presentation.numbers import count, percent, usd
from batchline.presentation.report import REPORT_FILE, report_key
from batchline.presentation.text import duration
from batchline.settings import Settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchline_cli.local_outputs import point_report_at_copies
from batchline_cli.table_jobs import spec_bytes, upload_file
from batchline_local.crashes import Crash
from batchline_local.emulator import EmulatorServer, Faults
from batchline_local.local_stack import LocalAws

OUTPUT_FILES = ("results.jsonl", "errors.jsonl", "summary.json")


# Batches in these states are done at the provider: nothing of theirs runs or bills any more.
WORKERS_GRACE_SECONDS = 10.0  # an interrupted realtime run lets the calls under way end this long
CANCEL_WAIT_SECONDS = 120.0  # --cancel-on-interrupt: how long the cancelled job is given to write its outputs


class NothingToResume(LookupError):
    """--resume, but the state directory holds no job for this file; the message says what to do."""


class WatchTimeout(TimeoutError):
    """The job did not finish within the run's --timeout; it goes on where it stopped when run again."""


@dataclass
class LocalRunResult:
    execution_status: str
    summary: dict
    out_dir: Path
    seconds: float
    crashes_fired: tuple[Crash, ...] = ()
    interrupted: str | None = None  # why the run stopped before the job ended (Ctrl-C, --timeout)
    still_running: tuple[str, ...] = ()  # what goes on at the provider after this run, said to the user


def quiet_service_logs() -> None:
    """Keep the terminal for progress: moto's request log and the handlers' INFO lines go quiet.

    Set POWERTOOLS_LOG_LEVEL=INFO (or DEBUG) to see the handlers' structured logs again.
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    logging.getLogger("batchline").setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING").upper())


@contextlib.contextmanager
def openai_endpoint(settings: Settings, *, faults: Faults | None = None) -> Iterator[tuple[str, str]]:
    """(base_url, api_key): OPENAI_BASE_URL and OPENAI_API_KEY when set, else a fresh emulator.

    ``faults`` are the emulator's (over BATCHLINE_EMULATOR_FAULTS and the settings); they cannot be
    injected into an endpoint named by OPENAI_BASE_URL, so asking for both is refused.
    """
    base_url = os.environ.get("OPENAI_BASE_URL")
    if base_url:
        if faults is not None:
            raise SystemExit("faults are injected by the built-in emulator: unset OPENAI_BASE_URL to use them")
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise SystemExit(
                "OPENAI_BASE_URL is set but OPENAI_API_KEY is not: set both, or neither to use the emulator"
            )
        yield base_url, api_key
        return
    with EmulatorServer(settings=settings, faults=faults) as emulator:
        yield emulator.base_url, "local-emulator-key"


def run_local_job(
    input_path: Path,
    out_dir: Path,
    settings: Settings,
    *,
    console: Console | None = None,
    timeout_seconds: float | None = None,
    openai: tuple[str, str] | None = None,
    mode: str | None = None,
    faults: Faults | None = None,
    crashes: Sequence[Crash] = (),
    state_dir: Path | None = None,
    cancel_on_interrupt: bool = False,
    resume: bool = False,
    spec: TableSpec | None = None,
    cache: bool = True,
) -> LocalRunResult:
    """Run one job; `openai` = (base_url, api_key) of a server to use instead of the default one.

    Ctrl-C (KeyboardInterrupt) or `timeout_seconds` passing stops the run, not the job: the
    realtime workers stop sending (the calls under way may end), the outputs so far are written
    (summary status ``interrupted``, the requests without an outcome counted as pending), and the
    result says what still runs at the provider. With `cancel_on_interrupt` the job is cancelled
    instead (its batches too) and its outputs, status ``cancelled``, are waited for. Either way the
    state in `state_dir` is kept, so that the same run again goes on where this one stopped.
    With `resume`, that is all the run may do: NothingToResume when `state_dir` holds no job for
    this file (a changed file is a new job). With `spec`, `input_path` is a table (or a folder of text
    files) and the job renders its rows into requests by the spec, and writes a results table too.

    `faults` are injected by the emulator this run starts, instead of BATCHLINE_EMULATOR_FAULTS or
    the settings'; a server given as `openai` brings its own, so giving both is an error.
    `crashes` are armed on the local stack before the upload (see LocalAws.crashes); the result
    says which of them went off. With `state_dir`, the local table and output bucket are kept
    there (see durable_state): the same file run again on it resumes its job.
    """
    if openai is not None and faults is not None:
        raise ValueError("faults apply to the emulator run_local_job starts; give them to the server passed as openai")
    console = console or Console(stderr=True)
    quiet_service_logs()
    if not (input_path.is_file() or (spec is not None and input_path.is_dir())):
        raise SystemExit(f"input file not found: {input_path}")
    started = time.monotonic()
    endpoint = contextlib.nullcontext(openai) if openai else openai_endpoint(settings, faults=faults)
    with (
        endpoint as (base_url, api_key),
        LocalAws(
            settings,
            openai_base_url=base_url,
            openai_api_key=api_key,
            poll_seconds=settings.local_poll_seconds,
            state_dir=state_dir,
        ) as aws,
    ):
        console.print(f"[bold]batchline[/] local run of [cyan]{input_path}[/] (OpenAI at {base_url})")
        if aws.restored.get("items"):
            console.print(
                f"state from {state_dir}: {aws.restored['items']:,} items, {aws.restored['objects']:,} objects "
                "(a job run before resumes; --ephemeral to start from nothing)"
            )
        spec_upload = spec_bytes(spec) if spec is not None else None
        with upload_file(input_path) as upload:
            key = upload.name
            if resume:
                _check_resumable(aws, upload, key, state_dir, spec_upload[0] if spec_upload else None)
            for crash in crashes:
                aws.crashes.arm(crash.function, at_call=crash.at_call, when=crash.when)
            job_id = aws.upload_input(str(upload), key, mode=mode, spec=spec_upload, cache=cache)
        layout = JobLayout(job_id, settings.output_prefix)
        interrupted, still_running, execution_arn = None, (), None
        try:
            execution_arn = aws.wait_for_execution(timeout=30)["executionArn"]
            status = _watch(aws, job_id, execution_arn, console, timeout_seconds)
        except (KeyboardInterrupt, WatchTimeout) as stop:
            interrupted = "interrupted (Ctrl-C)" if isinstance(stop, KeyboardInterrupt) else str(stop)
            status = None
            if cancel_on_interrupt and execution_arn is not None:
                console.print(f"[yellow]{interrupted}[/]: cancelling the job (--cancel-on-interrupt)")
                still_running = _cancel(aws, job_id, console)
                try:
                    status = _watch(aws, job_id, execution_arn, console, CANCEL_WAIT_SECONDS)
                except WatchTimeout:
                    console.print(f"the cancelled job did not end within {CANCEL_WAIT_SECONDS:g} s")
            else:
                console.print(f"[yellow]{interrupted}[/]: the job goes on where it stopped when run again")
            if status is None:  # the job runs on: its outputs so far
                still_running = still_running or _stop_where_it_is(aws, job_id, console)
                summary = _write_interim_outputs(aws, layout, out_dir, interrupted)
                return LocalRunResult(
                    "INTERRUPTED",
                    summary,
                    out_dir,
                    time.monotonic() - started,
                    crashes_fired=tuple(aws.crashes.fired),
                    interrupted=interrupted,
                    still_running=still_running,
                )
        _download_outputs(aws, layout, out_dir)
        summary = json.loads((out_dir / "summary.json").read_text())
        fired = tuple(aws.crashes.fired)
    return LocalRunResult(
        status,
        summary,
        out_dir,
        time.monotonic() - started,
        crashes_fired=fired,
        interrupted=interrupted,
        still_running=still_running,
    )


def _check_resumable(
    aws: LocalAws, input_path: Path, key: str, state_dir: Path | None, spec_digest: str | None
) -> None:
    from batchline_cli.jobs_client import file_job_id

    if state_dir is None:
        raise NothingToResume("--resume needs the state of an earlier run: it cannot go with --ephemeral")
    job_id = file_job_id(input_path, key, spec_digest=spec_digest)
    job = JobStore(aws.names.table, resource=aws_resource(aws)).get_job(job_id)
    if job is None:
        raise NothingToResume(
            f"nothing to resume: {state_dir} holds no job for {input_path} as it is now (job {job_id}); a changed "
            "file is a new job. Run without --resume to start it"
        )


def _download_outputs(aws: LocalAws, layout: JobLayout, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, name in zip((layout.results, layout.errors, layout.summary), OUTPUT_FILES, strict=True):
        aws.download_output(key, str(out_dir / name))
    (out_dir / REPORT_FILE).unlink(missing_ok=True)  # never an earlier run's
    summary = json.loads((out_dir / "summary.json").read_text())
    table = summary.get("outputs", {}).get("table")
    if table:  # a table job's results as a table
        aws.download_output(table.split("/", 3)[3], str(out_dir / PurePosixPath(table).name))
    if "report" in summary.get("outputs", {}):  # left out only when it could not be drawn
        aws.download_output(report_key(layout), str(out_dir / REPORT_FILE))
        point_report_at_copies(out_dir)  # the files beside it, not the local stack's bucket


def _stop_where_it_is(aws: LocalAws, job_id: str, console: Console) -> tuple[str, ...]:
    """Stop sending (the realtime workers end the calls under way, for a moment), and say what runs on."""
    if not aws.stop_sending(timeout=WORKERS_GRACE_SECONDS):
        console.print(
            f"some realtime calls were still under way after {WORKERS_GRACE_SECONDS:g} s: they are left to end; "
            "the next run finds them in doubt and does not send them again (--resend-in-doubt does)"
        )
    return _running_at_provider(aws, job_id)


def _running_at_provider(aws: LocalAws, job_id: str) -> tuple[str, ...]:
    """One line per batch still running at the provider: it goes on, and bills, after this run."""
    store = JobStore(aws.names.table, resource=aws_resource(aws))
    lines = []
    for shard in sorted(store.list_shards(job_id), key=lambda shard: shard.shard_id):
        batch_id, status = shard.batch_id, shard.batch_status
        if batch_id and status not in BATCH_ENDED and shard.status not in (ShardStatus.COLLECTED, ShardStatus.FAILED):
            lines.append(f"batch {batch_id} (shard {shard.shard_id}, {shard.requests:,} requests, {status})")
    return tuple(lines)


def _cancel(aws: LocalAws, job_id: str, console: Console) -> tuple[str, ...]:
    """Cancel the job as `batchline cancel` does; what could not be cancelled is still running."""
    from batchline_cli.jobs_client import CancelError, JobsClient

    try:
        outcome = JobsClient(aws.target()).cancel(job_id, grace_seconds=10.0)
    except CancelError as exc:
        console.print(f"could not cancel: {exc}", markup=False)
        return _running_at_provider(aws, job_id)
    for batch_id in outcome.cancelled_batches:
        console.print(f"cancelled batch {batch_id}", markup=False)
    return tuple(f"batch {batch_id}: cancel refused ({why})" for batch_id, why in outcome.failed_batches)


def _write_interim_outputs(aws: LocalAws, layout: JobLayout, out_dir: Path, reason: str) -> dict:
    """The job's outputs so far, into `out_dir` (see Finalization.interim)."""
    from batchline.wiring import finalization

    summary = finalization().interim(layout.job_id, reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, name in zip(
        (summary["outputs"][name] for name in ("results", "errors", "summary")), OUTPUT_FILES, strict=True
    ):
        aws.download_output(key, str(out_dir / name))
    (out_dir / REPORT_FILE).unlink(missing_ok=True)  # an earlier run's would not be this job's state
    return summary


def _watch(aws: LocalAws, job_id: str, execution_arn: str, console: Console, timeout_seconds: float | None) -> str:
    store = JobStore(aws.names.table, resource=aws_resource(aws))
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("planning", total=None)
        while True:
            status = aws.job_execution(execution_arn)["status"]
            job = store.get_job(job_id)
            if job is not None:
                shards = store.list_shards(job_id)
                if job.route == "realtime":
                    done, waiting = job.realtime_outcomes, max(0, job.valid - job.realtime_outcomes)
                    description = (
                        f"realtime: {job.realtime_calls:,} sent, {job.realtime_done:,} answered, "
                        f"{waiting:,} waiting ({job.realtime_rate_limited:,} answered 429)"
                    )
                else:
                    done = sum(s.request_counts.get("completed", 0) + s.request_counts.get("failed", 0) for s in shards)
                    collected = sum(1 for s in shards if s.status in (ShardStatus.COLLECTED, ShardStatus.FAILED))
                    description = f"batch: {len(shards)} shards, {collected} collected, status {job.status}"
                progress.update(
                    task,
                    total=max(job.valid, 1),
                    completed=min(done, job.valid),
                    description=description,
                )
            if status != "RUNNING":
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise WatchTimeout(f"timed out: the job did not finish within {timeout_seconds:g} s")
            time.sleep(0.25)


def aws_resource(aws: LocalAws):
    import boto3

    return boto3.resource("dynamodb", endpoint_url=aws.endpoint, region_name=aws.settings.region)


def print_summary(result: LocalRunResult, console: Console) -> None:
    """The job's account in a few rows; the outputs as the paths of the files in --out, one a line."""
    s = result.summary
    table = Table(title=f"job {s['job_id']}: {s['status']}", show_header=False, title_justify="left")
    table.add_column("what", no_wrap=True, style="bold")
    table.add_column("figures", overflow="fold")  # a long path folds, never cut short
    table.add_row(
        "requests",
        f"{count(s['input_lines'])} lines: {count(s['succeeded'])} succeeded, {count(s['failed'])} failed, "
        f"{count(s['invalid'])} invalid",
    )
    if "pending" in s:
        table.add_row("pending", f"{count(s['pending'])} requests have no outcome yet (the job was still running)")
    table.add_row("shards", count(s["shards"]))
    table.add_row("tokens", f"{count(s['input_tokens'])} in, {count(s['output_tokens'])} out")
    if s.get("route") == "realtime":
        table.add_row("cost", f"{usd(s['cost_usd'])} at realtime price (route: realtime)")
    else:
        table.add_row(
            "cost", f"{usd(s['cost_usd'])} at batch price ({usd(s['cost_usd_if_realtime'])} if sent realtime)"
        )
    aws = s.get("aws")
    if aws:
        share = aws.get("share_of_llm_cost")
        services = ", ".join(f"{name} {usd(amount)}" for name, amount in aws["by_service_usd"].items() if amount)
        table.add_row(
            "AWS cost",
            usd(aws["cost_usd"])
            + (f" ({percent(share)} of the LLM cost)" if share is not None else "")
            + f" if run in AWS: {services}",
        )
    table.add_row("time", duration(result.seconds))
    out_dir = result.out_dir.resolve()
    table.add_row("outputs", "\n".join(str(out_dir / name) for name in OUTPUT_FILES))
    table_url = s.get("outputs", {}).get("table")
    if table_url:
        table.add_row("table", f"{out_dir / PurePosixPath(table_url).name} (one row per input row)")
    elif s.get("table_error"):
        table.add_row("table", f"not written: {s['table_error']}")
    if (out_dir / REPORT_FILE).is_file():
        table.add_row("report", f"{out_dir / REPORT_FILE} (open it in a browser)")
    console.print(table)
    console.print(s["message"])
