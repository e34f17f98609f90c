"""The `batchline` command line."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from batchline.composition import price_book
from batchline.domain.routing import MODES
from batchline.domain.statuses import JobStatus
from batchline.settings import EmulatorSettings, Settings, SettingsError, load_settings, settings_from_cdk_json
from pydantic import ValidationError
from rich.console import Console

if TYPE_CHECKING:
    from batchline.datasets.spec import TableSpec

    from batchline_local.emulator.faults import Faults

SETTINGS_NAME = "cdk.json"  # read from the current directory, as `cdk` reads it
DEFAULT_STATE_DIR = Path(".batchline") / "state"

# Plain help, -h as well as --help, on every command: rich's help panels showed a <bool> for each flag.
HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    no_args_is_help=True,
    help="Push very large numbers of LLM requests through a provider at the lowest cost.",
    context_settings=HELP_SETTINGS,
    rich_markup_mode=None,
)
local_app = typer.Typer(
    no_args_is_help=True,
    help="Run batchline on this machine, with no AWS account.",
    context_settings=HELP_SETTINGS,
    rich_markup_mode=None,
)
app.add_typer(local_app, name="local")
console = Console(stderr=True)
Mode = Enum("Mode", {name: name for name in MODES}, type=str)  # --mode's choices, as the help lists them


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"batchline {version('batchline')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="print the version and exit")
    ] = False,
) -> None:
    """Push very large numbers of LLM requests through a provider at the lowest cost.

    Exit codes: 0 done (every line answered), 1 done with failed or invalid lines (or a job that
    failed), 2 bad usage or input, 130 interrupted.
    """


def _settings(cdk_json: Path | None) -> Settings:
    """The settings of --cdk-json; without it, of ./cdk.json when there is one, else the defaults."""
    if cdk_json is None:
        cdk_json = Path(SETTINGS_NAME)
        if not cdk_json.is_file():
            return load_settings({})
    try:
        return settings_from_cdk_json(cdk_json)
    except SettingsError as exc:
        console.print(f"[red]{exc}[/] (in {cdk_json})")
        raise typer.Exit(2) from None


INPUT_FILE = typer.Argument(
    metavar="INPUT", exists=True, dir_okay=False, readable=True, help="JSONL file of OpenAI batch requests"
)
DATA_ARGUMENT = typer.Argument(
    metavar="DATA",
    exists=True,
    readable=True,
    help="a JSONL file of OpenAI batch requests; or, with --prompt or --embed, a table: CSV, TSV, parquet, "
    "JSON Lines of records, or a folder of text files",
)
TABLE_HELP = "Table jobs (DATA is a table)"
PROMPT_OPTION = typer.Option(
    "--prompt",
    metavar="TEMPLATE",
    rich_help_panel=TABLE_HELP,
    help="each row's user message, a Jinja2 template over its columns, e.g. 'Classify: {{ review }}' "
    "(@FILE reads it from a file)",
)
SYSTEM_OPTION = typer.Option(
    "--system", metavar="TEMPLATE", rich_help_panel=TABLE_HELP, help="each row's system message (Jinja2 too)"
)
TABLE_MODEL_OPTION = typer.Option(
    "--model", "-m", metavar="M", rich_help_panel=TABLE_HELP, help="the model every row's request goes to"
)
EMBED_OPTION = typer.Option(
    "--embed", metavar="COLUMN", rich_help_panel=TABLE_HELP, help="embed each row's COLUMN instead of a chat"
)
SCHEMA_OPTION = typer.Option(
    "--schema",
    metavar="X",
    rich_help_panel=TABLE_HELP,
    help="structured answers: a JSON Schema file or module:PydanticModel; every answer is validated",
)
ID_COLUMN_OPTION = typer.Option(
    "--id-column", metavar="COLUMN", rich_help_panel=TABLE_HELP, help="keep this column as each row's custom_id"
)
COLUMNS_OPTION = typer.Option(
    "--columns", metavar="A,B", rich_help_panel=TABLE_HELP, help="input columns to keep in the results table [all]"
)
OUTPUT_FORMAT_OPTION = typer.Option(
    "--output-format", rich_help_panel=TABLE_HELP, help="the results table's format: parquet or csv"
)
FLATTEN_OPTION = typer.Option(
    "--flatten", rich_help_panel=TABLE_HELP, help="the schema's fields as columns instead of one parsed column"
)
MAX_TOKENS_OPTION = typer.Option(
    "--max-tokens", min=1, rich_help_panel=TABLE_HELP, help="the output cap of each row's request"
)
NO_CACHE_OPTION = typer.Option(
    "--no-cache",
    help="send every request, even one answered before or repeated in the file, and keep no answer "
    "(sent as the object's batchline-cache: off metadata); a file that ran before resumes its job as it was",
)


class OutputFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


def _table_spec(data: Path, **options: Any) -> TableSpec | None:
    """The table job the options describe (None: DATA is a request file); exit 2 saying what is wrong."""
    from batchline_cli.table_jobs import TableOptionError, table_spec

    try:
        spec = table_spec(data, **options)
    except (TableOptionError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    if spec is None and data.is_dir():
        raise _fail(f"{data} is a folder: a folder of text files is a table, give --prompt or --embed", 2)
    return spec


SETTINGS_FILE = typer.Option(
    "--cdk-json",
    exists=True,
    dir_okay=False,
    help="settings file (the batchline key of its context) [default: ./cdk.json if there is one, else the defaults]",
)


FAULTS_HELP = (
    "emulator faults for this run, e.g. 'token_limit=2,expire=0.5,request_error=0.05'; "
    "wins over BATCHLINE_EMULATOR_FAULTS and the settings ('' for none)"
)


def _faults(spec: str | None, settings: Settings) -> Faults | None:
    """--faults parsed before anything starts; None when not given, and then BATCHLINE_EMULATOR_FAULTS
    or the settings' faults are checked now instead. A wrong spec exits with 2 and says what is wrong."""
    from batchline_local.emulator.faults import Faults

    try:
        if spec is None:
            Faults.from_settings(settings.emulator.faults, os.environ)
            return None
        return Faults.parse(spec)
    except ValueError as exc:
        console.print(f"--faults: {exc}" if spec is not None else str(exc), style="red", markup=False)
        raise typer.Exit(2) from None


def _use_bundled_encodings() -> None:
    """tiktoken must never reach for the internet: point it at the packaged encodings."""
    from batchline_cli.encodings import ensure_encodings

    ensure_encodings()


@local_app.command("run")
def local_run(
    input_path: Annotated[Path, DATA_ARGUMENT],
    out: Annotated[
        Path, typer.Option("--out", help="directory that receives results.jsonl, errors.jsonl, summary.json")
    ] = Path("out"),
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
    mode: Annotated[
        Mode | None,
        typer.Option(
            help="the route (sent as the object's batchline-mode metadata) [default: the settings' default_mode]",
        ),
    ] = None,
    faults: Annotated[str | None, typer.Option("--faults", metavar="SPEC", help=FAULTS_HELP)] = None,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            envvar="BATCHLINE_STATE_DIR",
            file_okay=False,
            help="where the local table and output bucket are kept, so that the same command again resumes the job",
        ),
    ] = DEFAULT_STATE_DIR,
    ephemeral: Annotated[
        bool, typer.Option("--ephemeral", help="keep nothing on disk: the run starts from nothing and leaves nothing")
    ] = False,
    resend_in_doubt: Annotated[
        bool,
        typer.Option(
            "--resend-in-doubt",
            help="send again the requests a killed run had in flight (they may have been billed already)",
        ),
    ] = False,
    cancel_on_interrupt: Annotated[
        bool,
        typer.Option(
            "--cancel-on-interrupt",
            help="on Ctrl-C or --timeout, cancel the job and its batches at the provider instead of leaving them on",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="only go on with this file's job from --state-dir (the same command without it does too); "
            "exit 2 when there is none",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=1,
            help="stop watching after this long, as Ctrl-C does (outputs so far, state kept) [default: no limit]",
        ),
    ] = None,
    prompt: Annotated[str | None, PROMPT_OPTION] = None,
    system: Annotated[str | None, SYSTEM_OPTION] = None,
    model: Annotated[str | None, TABLE_MODEL_OPTION] = None,
    embed: Annotated[str | None, EMBED_OPTION] = None,
    schema: Annotated[str | None, SCHEMA_OPTION] = None,
    id_column: Annotated[str | None, ID_COLUMN_OPTION] = None,
    columns: Annotated[str | None, COLUMNS_OPTION] = None,
    output_format: Annotated[OutputFormat, OUTPUT_FORMAT_OPTION] = OutputFormat.parquet,
    flatten: Annotated[bool, FLATTEN_OPTION] = False,
    max_tokens: Annotated[int | None, MAX_TOKENS_OPTION] = None,
    no_cache: Annotated[bool, NO_CACHE_OPTION] = False,
) -> None:
    """Run one job end to end: moto + the real state machine + the OpenAI emulator (or OPENAI_BASE_URL).

    Its state is kept in --state-dir: after a kill, a crash or Ctrl-C, the same command resumes the
    job and sends only the requests that have no answer yet. Ctrl-C (or --timeout) writes the
    outputs so far (status interrupted), says what still runs at the provider, and exits with 130.
    """
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    spec = _table_spec(
        input_path,
        model=model,
        prompt=prompt,
        system=system,
        embed=embed,
        schema=schema,
        id_column=id_column,
        columns=columns,
        output_format=output_format.value,
        flatten=flatten,
        max_tokens=max_tokens,
    )
    if resend_in_doubt:
        settings = settings.model_copy(
            update={"realtime": settings.realtime.model_copy(update={"resend_in_doubt": True})}
        )
    injected = _faults(faults, settings)
    route = mode.value if mode is not None else None
    from batchline_local.local_run import NothingToResume, print_summary, run_local_job

    if injected is not None:
        console.print(f"emulator faults: {injected.describe() or 'none'}")
    kept = None if ephemeral else state_dir
    try:
        result = run_local_job(
            input_path,
            out,
            settings,
            console=console,
            mode=route,
            faults=injected,
            state_dir=kept,
            cancel_on_interrupt=cancel_on_interrupt,
            timeout_seconds=timeout,
            resume=resume,
            spec=spec,
            cache=not no_cache,
        )
    except NothingToResume as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # a second Ctrl-C, while the first was being handled
        console.print("interrupted again: stopped without writing the outputs", style="yellow")
        _say_how_to_resume(kept)
        raise typer.Exit(INTERRUPTED_EXIT) from None
    print_summary(result, Console())
    if result.interrupted:
        for line in result.still_running:
            console.print(f"still running at the provider (it bills when it completes): {line}", markup=False)
        if result.still_running and not cancel_on_interrupt:
            console.print(
                "to stop paying for them, run the same command with --cancel-on-interrupt and press Ctrl-C, "
                "or cancel them at the provider",
                markup=False,
            )
        _say_how_to_resume(kept)
        raise typer.Exit(INTERRUPTED_EXIT)
    if result.execution_status != "SUCCEEDED" or result.summary.get("status") != JobStatus.SUCCEEDED:
        raise typer.Exit(1)  # done, but not every line answered: errors.jsonl says which and why


INTERRUPTED_EXIT = 130  # as a shell reports a command stopped by SIGINT


def _say_how_to_resume(state_dir: Path | None) -> None:
    if state_dir is None:
        console.print("--ephemeral: nothing was kept, so the job cannot be resumed; run it again to start over")
        return
    ran_as_batchline = Path(sys.argv[0]).name == "batchline"
    command = f"`{shlex.join(['batchline', *sys.argv[1:]])}`" if ran_as_batchline else "the same command"
    console.print(
        f"the job's state is kept in {state_dir}: {command} goes on where it stopped, "
        "sending only what has no answer yet",
        markup=False,
    )


# The `batchline emulator` options that set a field of settings.emulator for one run.
EMULATOR_OPTIONS = {
    "tokens_per_minute": "--tpm",
    "requests_per_minute": "--rpm",
    "burst_seconds": "--burst-seconds",
    "realtime_latency_seconds": "--latency",
    "rate_limit_algorithm": "--rate-limit-algorithm",
}


def _emulator_settings(cdk_json: Path | None, given: dict[str, object]) -> Settings:
    """The settings file's (./cdk.json when none is named and it exists, else the
    defaults) with the options given on the command line over its emulator settings. A wrong value
    exits with 2 and names the option."""
    if cdk_json is None:
        settings = _settings(None)
    elif not cdk_json.is_file():
        console.print(f"--cdk-json: no such file: {cdk_json}", style="red", markup=False)
        raise typer.Exit(2)
    else:
        settings = _settings(cdk_json)
    overrides = {name: value for name, value in given.items() if value is not None}
    if not overrides:
        return settings
    try:
        emulator = EmulatorSettings.model_validate({**settings.emulator.model_dump(), **overrides})
    except ValidationError as exc:
        for error in exc.errors():
            option = EMULATOR_OPTIONS.get(str(error["loc"][0]), str(error["loc"][0]))
            console.print(f"{option}: {error['msg']}", style="red", markup=False)
        raise typer.Exit(2) from None
    return settings.model_copy(update={"emulator": emulator})


def _describe_limits(pace: EmulatorSettings) -> str:
    limits = f"{pace.requests_per_minute:,} RPM and {pace.tokens_per_minute:,} TPM per model"
    if pace.rate_limit_algorithm == "token_bucket":
        return f"{limits}, token buckets holding {pace.burst_seconds:g} s of refill"
    return f"{limits} per fixed {pace.rate_window_seconds:g} s window"


@app.command("emulator")
def emulator(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8787,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    cdk_json: Annotated[
        Path | None,
        typer.Option(help="settings file [default: the repository's cdk.json if there is one, else the defaults]"),
    ] = None,
    faults: Annotated[str | None, typer.Option("--faults", metavar="SPEC", help=FAULTS_HELP)] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", help="tokens per minute per model (emulator.tokens_per_minute)")
    ] = None,
    rpm: Annotated[
        int | None, typer.Option("--rpm", help="requests per minute per model (emulator.requests_per_minute)")
    ] = None,
    burst_seconds: Annotated[
        float | None,
        typer.Option(
            "--burst-seconds", help="token_bucket: seconds of refill each bucket holds (emulator.burst_seconds)"
        ),
    ] = None,
    latency: Annotated[
        float | None,
        typer.Option("--latency", help="seconds each realtime answer takes (emulator.realtime_latency_seconds)"),
    ] = None,
    rate_limit_algorithm: Annotated[
        str | None,
        typer.Option(
            "--rate-limit-algorithm",
            metavar="token_bucket|fixed_window",
            help="how the limits are enforced (emulator.rate_limit_algorithm)",
        ),
    ] = None,
) -> None:
    """Serve the OpenAI-compatible emulator until interrupted. The options given win over the settings file."""
    _use_bundled_encodings()
    settings = _emulator_settings(
        cdk_json,
        {
            "tokens_per_minute": tpm,
            "requests_per_minute": rpm,
            "burst_seconds": burst_seconds,
            "realtime_latency_seconds": latency,
            "rate_limit_algorithm": rate_limit_algorithm,
        },
    )
    injected = _faults(faults, settings)
    from batchline_local.emulator import serve_forever

    console.print(f"OpenAI emulator on http://{host}:{port}/v1 (Ctrl-C to stop)")
    console.print(f"rate limits: {_describe_limits(settings.emulator)}", markup=False)
    serve_forever(host, port, settings, faults=injected)


@app.command("estimate")
def estimate(
    input_path: Annotated[Path, DATA_ARGUMENT],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", metavar="M", help="also price every request as model M (repeatable)"),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="send N randomly chosen requests realtime (with OPENAI_API_KEY, to OPENAI_BASE_URL or OpenAI) and "
            "extrapolate output tokens from their real lengths",
        ),
    ] = 0,
    sample_emulator: Annotated[
        bool,
        typer.Option(
            "--sample-emulator",
            help="send the --sample to the built-in emulator instead: its answers are synthetic, so are the figures",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the --sample choice: the same seed picks the same requests")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
    prompt: Annotated[str | None, PROMPT_OPTION] = None,
    system: Annotated[str | None, SYSTEM_OPTION] = None,
    embed: Annotated[str | None, EMBED_OPTION] = None,
    schema: Annotated[str | None, SCHEMA_OPTION] = None,
    id_column: Annotated[str | None, ID_COLUMN_OPTION] = None,
    max_tokens: Annotated[int | None, MAX_TOKENS_OPTION] = None,
) -> None:
    """What a file costs before it is sent: tokens, shards and price per endpoint and model, as planned.

    For a table (with --prompt or --embed), the first --model is the one its rows' requests go to.
    """
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    models = list(dict.fromkeys(model or []))
    table = prompt is not None or embed is not None
    spec = _table_spec(
        input_path,
        model=models[0] if table and models else None,
        prompt=prompt,
        system=system,
        embed=embed,
        schema=schema,
        id_column=id_column,
        columns=None,
        output_format="parquet",
        flatten=False,
        max_tokens=max_tokens,
    )
    if spec is not None:
        models = models[1:]  # the others, each priced beside it
    prices = price_book(settings)
    unknown = [name for name in models if prices.price_for(name) is None]
    if unknown:
        for name in unknown:
            console.print(f"--model: {prices.unpriced_message(name)}", style="red", markup=False)
        raise typer.Exit(2)
    from batchline_cli import estimate as estimating

    endpoint = None
    if sample_emulator and not sample:
        console.print("--sample-emulator goes with --sample N", style="red", markup=False)
        raise typer.Exit(2)
    if sample:
        try:
            endpoint = estimating.SampleEndpoint.from_environment(os.environ, emulator=sample_emulator)
        except estimating.SampleEndpointMissing as missing:
            console.print(str(missing), style="red", markup=False)
            raise typer.Exit(2) from None
    from batchline_cli.table_jobs import upload_file

    with upload_file(input_path) as planned_path:
        result, report = estimating.run_estimate(
            planned_path,
            settings,
            models=models,
            sample=sample,
            seed=seed,
            console=console,
            endpoint=endpoint,
            spec=spec,
        )
    if report is not None and report.sent and not report.measurements:
        _, first = report.failures[0]
        check = (
            "check BATCHLINE_EMULATOR_FAULTS and the emulator's faults setting"
            if report.emulator
            else "check OPENAI_BASE_URL and OPENAI_API_KEY"
        )
        console.print(
            f"--sample: none of the {report.sent} sampled requests was answered (first: {first}); {check}",
            style="red",
            markup=False,
        )
        raise typer.Exit(1)
    if json_output:
        typer.echo(json.dumps(estimating.estimate_json(result, report, path=input_path, settings=settings), indent=2))
    else:
        estimating.print_estimate(result, report, path=input_path, settings=settings, console=Console())


@app.command("validate")
def validate(
    input_path: Annotated[Path, INPUT_FILE],
    json_output: Annotated[bool, typer.Option("--json", help="print the bad lines as one JSON list")] = False,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
) -> None:
    """The pipeline's own checks of every line; exit status 0 only when every non-blank line is valid."""
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    from batchline_cli import estimate as estimating

    summary, invalid = estimating.run_validate(input_path, settings, console=console)
    said = estimating.validate_summary(summary, invalid)
    if json_output:
        typer.echo(json.dumps(estimating.invalid_json(invalid), indent=2))
        console.print(said, markup=False, highlight=False, soft_wrap=True)
    else:
        out = Console()
        if invalid:
            estimating.print_invalid_lines(invalid, out)
        out.print(said, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1 if invalid else 0)


# -- the job commands: a deployed stack or the local one ------------------------------------------
TARGET_HELP = "Which stack: --stack NAME, or --local; without either, the local stack when it runs, else 'Batchline'."
STACK_OPTION = typer.Option(
    "--stack",
    metavar="NAME",
    help="a deployed stack, by its CloudFormation name (its outputs name the buckets, table and state machine)",
)
LOCAL_OPTION = typer.Option("--local", help="the stack `batchline local up` runs (found through its state file)")
STATE_FILE_OPTION = typer.Option(
    "--state-file",
    envvar="BATCHLINE_LOCAL_STATE",
    dir_okay=False,
    help="the local stack's state file [default: .batchline/local.json]",
)
REGION_OPTION = typer.Option("--region", help="AWS region of the deployed stack [default: your AWS configuration]")
JOB_ARGUMENT = typer.Argument(metavar="JOB", help="the job id, as `batchline submit` printed it")


def _target(stack: str | None, local: bool, state_file: Path | None, region: str | None, cdk_json: Path):
    from batchline_cli.stack_target import TargetError, resolve_target

    settings = _settings(cdk_json)
    try:
        with console.status("looking for the stack"):
            return resolve_target(
                stack=stack, local=local, state_file=state_file, region=region, output_prefix=settings.output_prefix
            )
    except TargetError as exc:
        raise _fail(str(exc)) from None


def _jobs_client(stack: str | None, local: bool, state_file: Path | None, region: str | None, cdk_json: Path):
    from batchline_cli.jobs_client import JobsClient

    return JobsClient(_target(stack, local, state_file, region, cdk_json))


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def _say(message: str, style: str | None = None) -> None:
    """A message on stderr, as written: no markup, no highlighting, and not wrapped (it may be piped)."""
    console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _say(message, "red")
    return typer.Exit(code)


def _aws_errors(command):
    """A command's AWS failures said in one line, with what to do next, instead of a traceback."""
    import functools

    @functools.wraps(command)
    def run(*args, **kwargs):
        import botocore.exceptions

        try:
            return command(*args, **kwargs)
        except botocore.exceptions.EndpointConnectionError as exc:
            raise _fail(
                f"cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}: for the local stack, is `batchline local up` "
                "still running? Start it again (a stopped local stack keeps nothing), or pass --stack NAME"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise _fail("no AWS credentials: configure them (aws configure, AWS_PROFILE) and try again") from None
        except botocore.exceptions.ClientError as exc:
            raise _fail(f"AWS refused: {exc}; check your credentials' permissions on the stack's resources") from None

    return run


@contextlib.contextmanager
def _bytes_progress(description: str, total: int):
    """A transient bar counting bytes; the callback it yields takes a number of bytes done."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=max(total, 1))
        yield lambda done: progress.advance(task, done)


@app.command("submit", epilog=TARGET_HELP)
@_aws_errors
def submit(
    input_path: Annotated[Path, DATA_ARGUMENT],
    mode: Annotated[
        Mode | None,
        typer.Option(
            help="the route (the object's batchline-mode metadata) [default: the settings' default_mode]",
        ),
    ] = None,
    budget_usd: Annotated[
        float | None,
        typer.Option(
            "--budget-usd", min=0.000001, metavar="X", help="cap of this job in US dollars (batchline-budget-usd)"
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="M",
            help="send every request to model M: a rewritten copy of the file is uploaded (lines keep their "
            "numbers); a file that mixes endpoints is refused",
        ),
    ] = None,
    stack: Annotated[str | None, STACK_OPTION] = None,
    local: Annotated[bool, LOCAL_OPTION] = False,
    state_file: Annotated[Path | None, STATE_FILE_OPTION] = None,
    region: Annotated[str | None, REGION_OPTION] = None,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
    prompt: Annotated[str | None, PROMPT_OPTION] = None,
    system: Annotated[str | None, SYSTEM_OPTION] = None,
    embed: Annotated[str | None, EMBED_OPTION] = None,
    schema: Annotated[str | None, SCHEMA_OPTION] = None,
    id_column: Annotated[str | None, ID_COLUMN_OPTION] = None,
    columns: Annotated[str | None, COLUMNS_OPTION] = None,
    output_format: Annotated[OutputFormat, OUTPUT_FORMAT_OPTION] = OutputFormat.parquet,
    flatten: Annotated[bool, FLATTEN_OPTION] = False,
    max_tokens: Annotated[int | None, MAX_TOKENS_OPTION] = None,
    no_cache: Annotated[bool, NO_CACHE_OPTION] = False,
) -> None:
    """Upload DATA to the stack's input bucket, which starts the job, and print the job's id.

    A table (with --prompt or --embed) goes with its spec: the stack renders each row into a request
    and writes the results as a table beside results.jsonl.
    """
    import tempfile

    from batchline_cli.jobs_client import file_job_id
    from batchline_cli.model_override import MixedEndpointsError, rewrite_model
    from batchline_cli.table_jobs import spec_bytes, upload_file

    settings = _settings(cdk_json)
    table = prompt is not None or embed is not None
    spec = _table_spec(
        input_path,
        model=model if table else None,
        prompt=prompt,
        system=system,
        embed=embed,
        schema=schema,
        id_column=id_column,
        columns=columns,
        output_format=output_format.value,
        flatten=flatten,
        max_tokens=max_tokens,
    )
    spec_upload = spec_bytes(spec) if spec is not None else None
    if spec is not None:
        model = None  # the spec's: every row's request is made for it
    route = mode.value if mode is not None else None
    prices = price_book(settings)
    if model is not None and prices.price_for(model) is None:
        raise _fail(f"--model: {prices.unpriced_message(model)}", 2)
    client = _jobs_client(stack, local, state_file, region, cdk_json)
    with tempfile.TemporaryDirectory(prefix="batchline-") as scratch, upload_file(input_path) as upload_path:
        key = upload_path.name
        size = upload_path.stat().st_size
        if model is not None:
            upload_path = Path(scratch) / input_path.name
            try:
                with _bytes_progress(f"setting the model to {model}", size) as advance:
                    rewritten = rewrite_model(input_path, upload_path, model, on_bytes=advance)
            except MixedEndpointsError as exc:
                raise _fail(str(exc), 2) from None
            was = ", ".join(f"{name} ({count:,})" for name, count in rewritten.models_before.items()) or "none"
            _say(
                f"--model: uploading a copy of {input_path.name} with body.model = {model} in all "
                f"{rewritten.requests:,} requests (they asked for {was})",
            )
            size = upload_path.stat().st_size
        with _bytes_progress("hashing (the job id)", size) as advance:
            job_id = file_job_id(upload_path, key, advance, spec_digest=spec_upload[0] if spec_upload else None)
        earlier = client.store.get_job(job_id)
        if earlier is not None:
            from batchline_cli.job_progress import shown_status

            _say(
                f"this file ran before as job {job_id} ({shown_status(earlier)}): uploading it again resumes it, "
                "and nothing already answered is sent again",
            )
        try:
            with _bytes_progress(f"uploading to {client.target.input_bucket}", size) as advance:
                client.upload(
                    upload_path,
                    key=key,
                    mode=route,
                    budget_usd=budget_usd,
                    on_bytes=advance,
                    spec=spec_upload,
                    cache=not no_cache,
                )
        except Exception as exc:  # noqa: BLE001 - boto3's many errors: say what failed and where
            raise _fail(f"uploading {input_path} to {client.target.label} failed: {exc}") from None
    options = ", ".join(
        part
        for part in (
            f"mode {route}" if route else "",
            f"budget ${budget_usd:g}" if budget_usd is not None else "",
            f"model {model}" if model else "",
            "no cache" if no_cache else "",
            f"a table job for {spec.model}" if spec is not None else "",
        )
        if part
    )
    _say(
        f"submitted {input_path.name} to {client.target.label}"
        + (f" ({options})" if options else "")
        + f" as s3://{client.target.input_bucket}/{key}; follow it with: batchline status {job_id} --watch",
    )
    typer.echo(job_id)


@app.command("status", epilog=TARGET_HELP)
@_aws_errors
def status(
    job_id: Annotated[str | None, typer.Argument(metavar="JOB", help="a job id; without it, the recent jobs")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until the job ends")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between two refreshes with --watch")] = 2.0,
    limit: Annotated[int, typer.Option(min=1, help="how many recent jobs to list")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON instead of tables and bars")] = False,
    stack: Annotated[str | None, STACK_OPTION] = None,
    local: Annotated[bool, LOCAL_OPTION] = False,
    state_file: Annotated[Path | None, STATE_FILE_OPTION] = None,
    region: Annotated[str | None, REGION_OPTION] = None,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
) -> None:
    """The recent jobs; or one job's progress per route and per shard (each batch's state), and its spend."""
    from batchline_cli import status_view

    client = _jobs_client(stack, local, state_file, region, cdk_json)
    out = Console()
    if job_id is None:
        with console.status(f"reading the jobs of {client.target.label}"):
            jobs = client.recent_jobs(limit)
        if json_output:
            typer.echo(json.dumps([{**job.as_json(), "shards": None} for job in jobs], indent=2))
        elif not jobs:
            _say(f"no jobs yet in {client.target.label}: start one with `batchline submit FILE`")
        else:
            out.print(status_view.jobs_table(jobs, title=f"recent jobs in {client.target.label}"))
        return
    view = _job_progress(client, job_id, wait=watch)
    watched = watch and not view.finished  # the live display leaves its last frame: not printed twice
    if watched:
        view = _watch_job(client, job_id, view, out, interval, json_output)
    if json_output:
        typer.echo(json.dumps(view.as_json(), indent=2))
    elif not watched:
        out.print(status_view.job_view(view, width=out.width))


def _job_progress(client, job_id: str, *, wait: bool, appear_seconds: float = 60.0):
    """The job's progress; with `wait`, a job not in the table yet (just submitted) is waited for."""
    import time

    from batchline_cli.jobs_client import JobNotFoundError

    deadline = time.monotonic() + (appear_seconds if wait else 0)
    with console.status(f"waiting for job {job_id} to be planned") if wait else contextlib.nullcontext():
        while True:
            try:
                return client.progress(job_id)
            except JobNotFoundError as exc:
                if time.monotonic() >= deadline:
                    raise _fail(str(exc)) from None
            time.sleep(1.0)


def _watch_job(client, job_id: str, view, out: Console, interval: float, json_output: bool):
    """Redraw the job's bars every `interval` seconds until it ends (Ctrl-C stops watching, not the job)."""
    from batchline_cli import status_view

    screen = console if json_output else out  # with --json, stdout holds the JSON alone
    try:
        return status_view.watch(
            view, lambda: client.progress(job_id), screen, interval=interval, transient=json_output
        )
    except KeyboardInterrupt:
        _say(f"stopped watching; job {job_id} goes on")
        raise typer.Exit(130) from None


@app.command("results", epilog=TARGET_HELP)
@_aws_errors
def results(
    job_id: Annotated[str, JOB_ARGUMENT],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            file_okay=False,
            help="directory that receives the job's outputs [default: none: results.jsonl is printed to stdout]",
        ),
    ] = None,
    stack: Annotated[str | None, STACK_OPTION] = None,
    local: Annotated[bool, LOCAL_OPTION] = False,
    state_file: Annotated[Path | None, STATE_FILE_OPTION] = None,
    region: Annotated[str | None, REGION_OPTION] = None,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
) -> None:
    """A finished job's results.jsonl, errors.jsonl, summary.json and report.html, into --out; without
    --out, results.jsonl on stdout (to pipe it on) and the job's account on stderr. Exits 1 when some
    lines have no result (errors.jsonl says why)."""
    import tempfile

    from batchline_cli.jobs_client import JobNotFinishedError, JobNotFoundError

    client = _jobs_client(stack, local, state_file, region, cdk_json)
    try:
        with console.status(f"looking for the outputs of job {job_id}"):
            found = client.outputs(job_id)
    except (JobNotFoundError, JobNotFinishedError) as exc:
        raise _fail(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="batchline-results-") as scratch:
        into = out if out is not None else Path(scratch)
        wanted = (
            found if out is not None else [(k, n) for k, n in found if k.endswith(("/results.jsonl", "/summary.json"))]
        )
        saved = []
        with _bytes_progress(f"downloading {len(wanted)} files", sum(size for _, size in wanted)) as advance:
            for key, _ in wanted:
                path = into / key.rsplit("/", 1)[-1]
                client.download(key, path, advance)
                saved.append(path)
        summary = json.loads((into / "summary.json").read_text())
        if out is not None and client.target.is_local:
            # the local stack's bucket is no place to go: the report lists the copies
            from batchline_cli.local_outputs import point_report_at_copies

            point_report_at_copies(out)
        if out is None:
            with (into / "results.jsonl").open("rb") as handle:
                shutil.copyfileobj(handle, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            typer.echo("\n".join(str(path) for path in saved))
    from batchline.presentation.numbers import count, usd

    said = (
        f"job {job_id}: {summary['status']}, {count(summary['succeeded'])} succeeded, {count(summary['failed'])} "
        f"failed, {count(summary['invalid'])} invalid, cost {usd(summary['cost_usd'])}"
    )
    _say(said)
    _say(summary.get("message", ""))
    if summary["status"] != "succeeded":
        raise typer.Exit(1)


CANCEL_HELP = (
    "Cancel a running job: no new batch is sent and the batches in flight are cancelled, but the execution "
    "goes on. The cancelled batches end 'cancelled', what they finished is collected, and the job finalizes as "
    "usual: results.jsonl keeps every answered request, and every request never sent or never run is in "
    "errors.jsonl. On the realtime route the workers send nothing more. --now stops the execution as well: "
    "nothing then collects what the batches finished, and no outputs are written."
)


@app.command("cancel", help=CANCEL_HELP, epilog=TARGET_HELP)
@_aws_errors
def cancel(
    job_id: Annotated[str, JOB_ARGUMENT],
    now: Annotated[
        bool, typer.Option("--now", help="also stop the execution at once (no outputs are written)")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(min=0, help="seconds to wait for a batch being created at this moment, to cancel it too"),
    ] = 30.0,
    stack: Annotated[str | None, STACK_OPTION] = None,
    local: Annotated[bool, LOCAL_OPTION] = False,
    state_file: Annotated[Path | None, STATE_FILE_OPTION] = None,
    region: Annotated[str | None, REGION_OPTION] = None,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
) -> None:
    from batchline_cli.jobs_client import CancelError, JobNotFoundError

    client = _jobs_client(stack, local, state_file, region, cdk_json)
    try:
        with console.status(f"cancelling job {job_id}"):
            outcome = client.cancel(job_id, grace_seconds=grace)
            stopped = client.stop_executions(client.job(job_id)) if now else []
    except (JobNotFoundError, CancelError) as exc:
        raise _fail(str(exc)) from None
    said = [f"cancel requested for job {job_id}"]
    if outcome.cancelled_batches:
        batches = _count(len(outcome.cancelled_batches), "batch", "batches")
        said.append(f"{batches} cancelled ({', '.join(outcome.cancelled_batches)})")
    if outcome.not_sent:
        said.append(f"{_count(len(outcome.not_sent), 'shard', 'shards')} will not be sent")
    if outcome.realtime:
        said.append("the realtime workers send nothing more")
    _say("; ".join(said))
    for batch_id, why in outcome.failed_batches:
        _say(f"batch {batch_id} was not cancelled: {why}", "yellow")
    if now:
        _say(
            f"stopped {_count(len(stopped), 'execution', 'executions')}: nothing collects the batches' answers now, "
            "and no outputs are written",
            "yellow",
        )
    else:
        collects = (
            "the workers record every request not yet sent as an error"
            if outcome.realtime
            else "it collects what the cancelled batches finished"
        )
        _say(
            f"the execution goes on: {collects} and writes the outputs, every request not answered as an error. "
            f"Follow it with: batchline status {job_id} --watch"
        )
    if outcome.failed_batches:
        raise typer.Exit(1)


@local_app.command("up")
def local_up(
    port: Annotated[int | None, typer.Option(help="moto's port [default: a free one]")] = None,
    emulator_port: Annotated[int | None, typer.Option(help="the OpenAI emulator's port [default: a free one]")] = None,
    state_file: Annotated[Path | None, STATE_FILE_OPTION] = None,
    cdk_json: Annotated[Path | None, SETTINGS_FILE] = None,
    faults: Annotated[str | None, typer.Option("--faults", metavar="SPEC", help=FAULTS_HELP)] = None,
) -> None:
    """Run the stack on this machine until Ctrl-C, for submit, status, results and cancel.

    moto (S3, DynamoDB, Lambda with the project's handlers, Step Functions running the real state
    machine, SQS, EventBridge) and the OpenAI emulator (or OPENAI_BASE_URL). The other commands
    find it through the state file, which is removed when it stops.
    """
    from batchline_cli.stack_target import TargetError, state_file_path
    from batchline_local.local_up import serve_until_interrupted

    _use_bundled_encodings()
    settings = _settings(cdk_json)
    injected = _faults(faults, settings)
    try:
        serve_until_interrupted(
            settings,
            state_file=state_file_path(state_file),
            console=console,
            port=port,
            emulator_port=emulator_port,
            faults=injected,
        )
    except TargetError as exc:
        raise _fail(str(exc)) from None
