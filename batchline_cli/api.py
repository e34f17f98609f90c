"""batchline from Python: a table (a DataFrame or a file) in, a table out.

    import batchline
    answers = batchline.run("feedback.csv", prompt="Classify: {{ text }}", model="gpt-4o-mini", schema=Label)

`run` runs the job on this machine (moto, the real state machine and the OpenAI emulator, or the
provider that OPENAI_BASE_URL names) and returns the results table: one row per input row, in
input order, with the row's columns, the answer (`text`, or `parsed` with a schema), `status`,
`error`, tokens, cost and route. `estimate` prices the same job without sending anything, and
`submit` hands it to a deployed stack, returning a `Job` to follow and fetch it from. The command
line does the same through the same functions.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchline.settings import Settings

DEFAULT_STATE_DIR = Path(".batchline") / "state"


def _frame_kind(data: Any) -> str | None:
    module = type(data).__module__.split(".", 1)[0]
    return module if module in ("pandas", "polars", "pyarrow") else None


def _as_file(data: Any, scratch: Path) -> Path:
    """A DataFrame (pandas, polars) or an arrow table written as parquet; a path as it is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = _frame_kind(data)
    if kind is None:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"batchline.run: no such file or folder: {path}")
        return path
    table = data if kind == "pyarrow" else pa.Table.from_pandas(data) if kind == "pandas" else data.to_arrow()
    # Named by its content: the same frame run again is the same job (it resumes, or sends nothing).
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    content = sink.getvalue().to_pybytes()
    path = scratch / f"dataframe-{hashlib.sha256(content).hexdigest()[:12]}.parquet"
    path.write_bytes(content)
    return path


def _result_frame(path: Path, like: str | None) -> Any:
    """The results table as the caller's kind of frame: pandas or polars as given, else polars
    (pandas when polars is not installed, an arrow table when neither is)."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    table = pa_csv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
    if like == "pyarrow":
        return table
    if like == "pandas":
        return table.to_pandas()
    try:
        import polars
    except ImportError:
        try:
            return table.to_pandas()
        except ImportError:
            return table
    return polars.from_arrow(table)


def _settings(settings: Settings | Path | str | None) -> Settings:
    """The settings given, or those of the cdk.json file named, or of ./cdk.json, or the defaults."""
    from batchline.settings import load_settings, settings_from_cdk_json

    if settings is None:
        here = Path("cdk.json")
        return settings_from_cdk_json(here) if here.is_file() else load_settings({})
    if isinstance(settings, (str, Path)):
        return settings_from_cdk_json(Path(settings))
    return settings


def _stack_client(stack: str | None, region: str | None) -> Any:
    """The client of the deployed stack named (or the local one `batchline local up` runs, or the
    default stack), as the command line finds it."""
    from batchline_cli.jobs_client import JobsClient
    from batchline_cli.stack_target import resolve_target

    target = resolve_target(
        stack=stack, local=False, state_file=None, region=region, output_prefix=_settings(None).output_prefix
    )
    return JobsClient(target)


def run(
    data: Any,
    *,
    model: str,
    prompt: str | None = None,
    system: str | None = None,
    embed: str | None = None,
    schema: Any = None,
    id_column: str | None = None,
    columns: list[str] | None = None,
    mode: str | None = None,
    flatten: bool = False,
    max_tokens: int | None = None,
    state_dir: Path | str | None = DEFAULT_STATE_DIR,
    out: Path | str | None = None,
    settings: Settings | Path | str | None = None,
    quiet: bool = False,
) -> Any:
    """Run a table job on this machine; the results table (see the module's docstring).

    `data` is a pandas or polars DataFrame, an arrow table, or the path of a CSV, TSV, parquet or
    JSON Lines file or a folder of text files. `prompt` (a Jinja2 template over the row's columns)
    or `embed` (a column to embed) says what each row asks; `schema` (a JSON Schema dict, a pydantic
    model, or a file / module:Model) asks for structured answers, validated. The job's state is kept
    in `state_dir` (None: nothing kept), so that the same call again resumes it, and a call on a
    changed table sends only the rows whose requests changed. `out` keeps the output files too.
    """
    from rich.console import Console

    from batchline_cli.encodings import ensure_encodings
    from batchline_cli.table_jobs import make_spec
    from batchline_local.local_run import run_local_job

    ensure_encodings()
    chosen = _settings(settings)
    like = _frame_kind(data)
    with tempfile.TemporaryDirectory(prefix="batchline-run-") as scratch:
        path = _as_file(data, Path(scratch))
        spec = make_spec(
            path,
            model=model,
            prompt=prompt,
            system=system,
            embed=embed,
            schema=schema,
            id_column=id_column,
            columns=columns,
            output_format="parquet",
            flatten=flatten,
            max_tokens=max_tokens,
        )
        out_dir = Path(out) if out is not None else Path(scratch) / "out"
        console = Console(stderr=True, quiet=quiet)
        result = run_local_job(
            path,
            out_dir,
            chosen,
            console=console,
            mode=mode,
            state_dir=Path(state_dir) if state_dir is not None else None,
            spec=spec,
        )
        table = out_dir / "results.parquet"
        if not table.exists():
            raise RuntimeError(
                f"the job ended {result.summary.get('status')} without a results table: "
                f"{result.summary.get('table_error') or result.summary.get('message')}"
            )
        return _result_frame(table, like)


def estimate(
    data: Any,
    *,
    model: str,
    prompt: str | None = None,
    system: str | None = None,
    embed: str | None = None,
    schema: Any = None,
    id_column: str | None = None,
    max_tokens: int | None = None,
    settings: Settings | Path | str | None = None,
) -> dict[str, Any]:
    """What the same job would cost, planned exactly as it would run, nothing sent: the figures
    `batchline estimate --json` prints (tokens, shards, price by route)."""
    from rich.console import Console

    from batchline_cli import estimate as estimating
    from batchline_cli.encodings import ensure_encodings
    from batchline_cli.table_jobs import make_spec, upload_file

    ensure_encodings()
    chosen = _settings(settings)
    with tempfile.TemporaryDirectory(prefix="batchline-estimate-") as scratch:
        path = _as_file(data, Path(scratch))
        spec = make_spec(
            path,
            model=model,
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
        with upload_file(path) as planned:
            result, report = estimating.run_estimate(
                planned, chosen, models=[], sample=0, seed=0, console=Console(stderr=True, quiet=True), spec=spec
            )
        return estimating.estimate_json(result, report, path=path, settings=chosen)


@dataclass
class Job:
    """A table job handed to a deployed stack: follow it, then fetch its results table."""

    job_id: str
    stack: str | None
    region: str | None
    output_format: str

    def _client(self) -> Any:
        return _stack_client(self.stack, self.region)

    def status(self) -> dict[str, Any]:
        """Where the job stands: `batchline status JOB --json`."""
        progress: dict[str, Any] = self._client().progress(self.job_id).as_json()
        return progress

    def results(self, like: str | None = None) -> Any:
        """The results table, once the job has finished (JobNotFinishedError before)."""
        client = self._client()
        keys = [key for key, _ in client.outputs(self.job_id) if key.endswith(f"/results.{self.output_format}")]
        if not keys:
            raise RuntimeError(f"job {self.job_id} has no results table (is it a table job?)")
        with tempfile.TemporaryDirectory(prefix="batchline-results-") as scratch:
            path = Path(scratch) / f"results.{self.output_format}"
            client.download(keys[0], path)
            return _result_frame(path, like)


def submit(
    data: Any,
    *,
    model: str,
    prompt: str | None = None,
    system: str | None = None,
    embed: str | None = None,
    schema: Any = None,
    id_column: str | None = None,
    columns: list[str] | None = None,
    mode: str | None = None,
    output_format: str = "parquet",
    stack: str | None = None,
    region: str | None = None,
) -> Job:
    """Hand a table job to a deployed stack (its input bucket); the Job, to follow and fetch."""
    from batchline_cli.jobs_client import file_job_id
    from batchline_cli.table_jobs import make_spec, spec_bytes, upload_file

    client = _stack_client(stack, region)
    with tempfile.TemporaryDirectory(prefix="batchline-submit-") as scratch:
        path = _as_file(data, Path(scratch))
        spec = make_spec(
            path,
            model=model,
            prompt=prompt,
            system=system,
            embed=embed,
            schema=schema,
            id_column=id_column,
            columns=columns,
            output_format=output_format,
            flatten=False,
            max_tokens=None,
        )
        digest, body = spec_bytes(spec)
        with upload_file(path) as upload:
            job_id = file_job_id(upload, upload.name, spec_digest=digest)
            client.upload(upload, key=upload.name, mode=mode, budget_usd=None, spec=(digest, body))
    return Job(job_id, stack, region, spec.output_format)
