"""The `batchline` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from batchline.domain.routing import MODES
from batchline.settings import Settings, SettingsError, settings_from_cdk_json
from rich.console import Console

if TYPE_CHECKING:
    from batchline_local.emulator.faults import Faults

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CDK_JSON = REPO_ROOT / "cdk.json"

app = typer.Typer(
    no_args_is_help=True, help="Push very large numbers of LLM requests through a provider at the lowest cost."
)
local_app = typer.Typer(no_args_is_help=True, help="Run batchline on this machine, with no AWS account.")
app.add_typer(local_app, name="local")
console = Console(stderr=True)


def _settings(cdk_json: Path):
    try:
        return settings_from_cdk_json(cdk_json)
    except SettingsError as exc:
        console.print(f"[red]{exc}[/] (in {cdk_json})")
        raise typer.Exit(2) from None


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
    """tiktoken must never reach for the internet: point it at the encodings `make` installed."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO_ROOT / ".cache" / "tiktoken"))


@local_app.command("run")
def local_run(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL file of OpenAI batch requests")],
    out: Annotated[
        Path, typer.Option("--out", help="directory that receives results.jsonl, errors.jsonl, summary.json")
    ] = Path("out"),
    cdk_json: Annotated[Path, typer.Option(help="settings file (the batchline key of its context)")] = DEFAULT_CDK_JSON,
    mode: Annotated[
        str | None,
        typer.Option(
            help="batch, realtime or auto (sent as the object's batchline-mode metadata); default from settings"
        ),
    ] = None,
    faults: Annotated[str | None, typer.Option("--faults", metavar="SPEC", help=FAULTS_HELP)] = None,
) -> None:
    """Run one job end to end: moto + the real state machine + the OpenAI emulator (or OPENAI_BASE_URL)."""
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    injected = _faults(faults, settings)
    if mode is not None and mode not in MODES:
        console.print(f"[red]--mode must be one of {', '.join(MODES)}, not {mode!r}[/]")
        raise typer.Exit(2)
    from batchline_local.local_run import print_summary, run_local_job

    if injected is not None:
        console.print(f"emulator faults: {injected.describe() or 'none'}")
    result = run_local_job(input_path, out, settings, console=console, mode=mode, faults=injected)
    print_summary(result, Console())
    if result.execution_status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command("emulator")
def emulator(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8787,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    cdk_json: Annotated[Path, typer.Option(help="settings file")] = DEFAULT_CDK_JSON,
    faults: Annotated[str | None, typer.Option("--faults", metavar="SPEC", help=FAULTS_HELP)] = None,
) -> None:
    """Serve the OpenAI-compatible emulator until interrupted."""
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    injected = _faults(faults, settings)
    from batchline_local.emulator import serve_forever

    console.print(f"OpenAI emulator on http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve_forever(host, port, settings, faults=injected)


INPUT_FILE = typer.Argument(
    metavar="INPUT", exists=True, dir_okay=False, readable=True, help="JSONL file of OpenAI batch requests"
)
SETTINGS_FILE = typer.Option(
    "--cdk-json", exists=True, dir_okay=False, help="settings file (the batchline key of its context)"
)


@app.command("estimate")
def estimate(
    input_path: Annotated[Path, INPUT_FILE],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", metavar="M", help="also price every request as model M (repeatable)"),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="send N randomly chosen requests realtime (OPENAI_BASE_URL, else the built-in emulator) and "
            "extrapolate output tokens from their real lengths",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="seed of the --sample choice: the same seed picks the same requests")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
    cdk_json: Annotated[Path, SETTINGS_FILE] = DEFAULT_CDK_JSON,
) -> None:
    """What a file costs before it is sent: tokens, shards and price per endpoint and model, as planned."""
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    models = list(dict.fromkeys(model or []))
    prices = settings.price_book()
    unknown = [name for name in models if prices.price_for(name) is None]
    if unknown:
        console.print(
            f"--model: no price for {', '.join(map(repr, unknown))}. Known models: {', '.join(prices.known_models())}; "
            "add others to the 'pricing' setting in cdk.json",
            style="red",
            markup=False,
        )
        raise typer.Exit(2)
    from batchline_local import estimate as estimating

    def openai_endpoint():
        from batchline_local.local_run import openai_endpoint  # moto comes with it: import only to sample

        return openai_endpoint(settings)

    try:
        result, report = estimating.run_estimate(
            input_path,
            settings,
            models=models,
            sample=sample,
            seed=seed,
            console=console,
            openai_endpoint=openai_endpoint,
        )
    except SystemExit as exc:  # openai_endpoint's own refusal (OPENAI_BASE_URL without a key)
        console.print(str(exc.code), style="red", markup=False)
        raise typer.Exit(2) from None
    if report is not None and report.sent and not report.measurements:
        _, first = report.failures[0]
        console.print(
            f"--sample: none of the {report.sent} sampled requests was answered (first: {first}); "
            "check OPENAI_BASE_URL and OPENAI_API_KEY, or unset both to use the built-in emulator",
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
    cdk_json: Annotated[Path, SETTINGS_FILE] = DEFAULT_CDK_JSON,
) -> None:
    """The pipeline's own checks of every line; exit status 0 only when every non-blank line is valid."""
    _use_bundled_encodings()
    settings = _settings(cdk_json)
    from batchline_local import estimate as estimating

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
