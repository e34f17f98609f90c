"""`batchline estimate` and `batchline validate`: the pipeline's plan of a local file, before any spend.

Both run the pipeline's own Planner (planner_for, with the settings the stack deploys with) over
the file, through CountingPlanOutputs, so what they report is what the Plan step would find.
`--sample` sends a few requests on the realtime path with the official openai SDK (the pipeline's
own realtime adapter) to measure real output lengths. Only a real endpoint can measure them, so
without OPENAI_API_KEY it is refused, unless `--sample-emulator` asks for the built-in emulator,
whose synthetic answers the output then names as such.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from batchline.composition import planner_for, price_book
from batchline.datasets.spec import TableSpec
from batchline.domain.estimate import (
    OUTPUT_FROM_SAMPLE,
    CountingPlanOutputs,
    Estimate,
    Measurement,
    SampledRequest,
    build_estimate,
    compare_models,
)
from batchline.domain.outcomes import usage_tokens
from batchline.domain.planning import PlanSummary
from batchline.domain.realtime import ProviderResponse
from batchline.domain.request_line import InvalidLine, iter_physical_lines
from batchline.engines.tokenization import ParallelTokenCounter
from batchline.presentation.numbers import count, usd
from batchline.settings import Settings
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

READ_CHUNK_BYTES = 1 << 20
TOKEN_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))
PROGRESS_AFTER_SECONDS = 1.0
SAMPLE_CONCURRENCY = 8
SAMPLE_ATTEMPTS = 4
OPENAI_API_URL = "https://api.openai.com/v1"  # where the SDK sends requests when OPENAI_BASE_URL is not set
EMULATOR_API_KEY = "local-emulator-key"


class DelayedProgress(AbstractContextManager):
    """One progress bar on stderr that appears only once the work has lasted `after` seconds."""

    def __init__(
        self,
        console: Console,
        description: str,
        total: int,
        *columns: ProgressColumn,
        after: float = PROGRESS_AFTER_SECONDS,
    ) -> None:
        self._console = console
        self._description = description
        self._total = total
        self._columns = columns or (MofNCompleteColumn(),)
        self._after = after
        self._started = time.monotonic()
        self._done = 0
        self._progress: Progress | None = None
        self._task = None

    def advance(self, amount: int) -> None:
        self._done += amount
        if self._progress is None:
            if time.monotonic() - self._started < self._after:
                return
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                *self._columns,
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        self._progress.update(self._task, completed=self._done)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _chunks(path: Path, progress: DelayedProgress) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(READ_CHUNK_BYTES):
            yield chunk
            progress.advance(len(chunk))


@dataclass(frozen=True)
class PlannedFile:
    summary: PlanSummary
    outputs: CountingPlanOutputs
    recounted_prompt_tokens: dict[str, int]  # per encoding asked for with recount_encodings


def plan_file(
    path: Path, settings: Settings, console: Console, *, spec: TableSpec | None = None, **outputs_options
) -> PlannedFile:
    """Run the pipeline's planner over a local file, keeping counts only (see CountingPlanOutputs); with
    `spec`, the file is a table whose rows the spec renders into requests, as Plan does."""
    pool = ParallelTokenCounter(TOKEN_THREADS)
    try:
        outputs = CountingPlanOutputs(token_counter=pool, **outputs_options)
        planner = planner_for(settings, outputs=outputs, token_counter=pool)
        with DelayedProgress(console, f"reading {path.name}", path.stat().st_size, DownloadColumn()) as progress:
            if spec is not None:
                from batchline.datasets.plan_input import request_lines

                summary = planner.run(request_lines(path, spec))
            else:
                summary = planner.run(iter_physical_lines(_chunks(path, progress)))
            recounted = outputs.recounted_prompt_tokens()  # while the counting threads still run
    finally:
        pool.close()
    return PlannedFile(summary, outputs, recounted)


# ----- sampling ------------------------------------------------------------------------------------


class SampleEndpointMissing(Exception):
    """`--sample` with no real endpoint to measure: the message says what to set."""


@dataclass(frozen=True)
class SampleEndpoint:
    """Where `--sample` sends its requests: an OpenAI-compatible endpoint, or the built-in emulator."""

    base_url: str
    api_key: str | None  # None: the built-in emulator, started for the sample

    @property
    def emulator(self) -> bool:
        return self.api_key is None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, emulator: bool) -> SampleEndpoint:
        """OPENAI_API_KEY (with OPENAI_BASE_URL, else OpenAI's own API), or the emulator when asked for.

        Raise SampleEndpointMissing rather than fall back to the emulator: figures measured on its
        synthetic answers would pass for the model's."""
        if emulator:
            return cls(base_url="", api_key=None)
        base_url, api_key = environ.get("OPENAI_BASE_URL"), environ.get("OPENAI_API_KEY")
        if api_key:
            return cls(base_url=base_url or OPENAI_API_URL, api_key=api_key)
        if base_url:
            raise SampleEndpointMissing("--sample: OPENAI_BASE_URL is set but OPENAI_API_KEY is not: set both")
        raise SampleEndpointMissing(
            "--sample measures real output lengths, so it needs a real endpoint: set OPENAI_API_KEY "
            "(and OPENAI_BASE_URL for a server other than OpenAI's), or pass --sample-emulator to measure "
            "the built-in emulator's synthetic answers instead"
        )

    @contextmanager
    def connect(self, settings: Settings) -> Iterator[tuple[str, str]]:
        """(base_url, api_key) while the sample is sent; the emulator runs only that long."""
        if not self.emulator:
            yield self.base_url, self.api_key
            return
        from batchline_local.emulator import EmulatorServer

        with EmulatorServer(settings=settings) as server:
            yield server.base_url, EMULATOR_API_KEY


@dataclass(frozen=True)
class SampleReport:
    requested: int
    sent: int
    lines: list[int]  # the input lines sent, so that a --seed can be checked to pick the same ones
    measurements: list[Measurement]
    failures: list[tuple[SampledRequest, str]]
    input_tokens: int
    cost_usd_realtime: float
    base_url: str
    emulator: bool = False  # answered by the built-in emulator: synthetic lengths, nothing billed


def _retryable(response: ProviderResponse) -> bool:
    if response.status == 429:
        error = response.body.get("error") if isinstance(response.body, dict) else None
        return not (isinstance(error, dict) and error.get("code") == "insufficient_quota")
    return response.status in (0, 408, 409) or response.status >= 500


def _delay(response: ProviderResponse, attempt: int) -> float:
    try:
        return min(20.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return min(20.0, 0.5 * 2**attempt)


def _failure(response: ProviderResponse) -> str:
    error = response.body.get("error") if isinstance(response.body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {response.status}: {message or response.body!r}"


def _send(provider, request: SampledRequest) -> ProviderResponse:
    body = orjson.loads(request.raw)["body"]
    for attempt in range(SAMPLE_ATTEMPTS):
        response = provider.call(request.url, body, client_request_id=request.custom_id)
        if response.status == 200 or not _retryable(response) or attempt == SAMPLE_ATTEMPTS - 1:
            return response
        time.sleep(_delay(response, attempt))
    raise AssertionError("unreachable")


def measure_sample(
    sample: Sequence[SampledRequest],
    *,
    requested: int,
    base_url: str,
    api_key: str,
    settings: Settings,
    console: Console,
    emulator: bool = False,
) -> SampleReport:
    """Send each sampled request once (retrying 429/5xx a few times) and read its real output tokens."""
    from batchline.adapters.openai_realtime import OpenAIRealtime

    provider = OpenAIRealtime(api_key=api_key, base_url=base_url)
    prices = price_book(settings)
    measurements: list[Measurement] = []
    failures: list[tuple[SampledRequest, str]] = []
    input_tokens = 0
    cost = 0.0
    with (
        DelayedProgress(console, f"sending {len(sample)} sampled requests", len(sample)) as progress,
        ThreadPoolExecutor(max_workers=SAMPLE_CONCURRENCY, thread_name_prefix="sample") as pool,
    ):
        for request, response in zip(sample, pool.map(lambda r: _send(provider, r), sample), strict=True):
            progress.advance(1)
            if response.status != 200 or not isinstance(response.body, dict):
                failures.append((request, _failure(response)))
                continue
            prompt, output = usage_tokens(response.body.get("usage"))
            input_tokens += prompt
            cost += prices.realtime_cost(request.model, prompt, output)
            measurements.append(Measurement(request.url, request.model, request.max_output_tokens, output))
    return SampleReport(
        requested, len(sample), [r.line for r in sample], measurements, failures, input_tokens, cost, base_url, emulator
    )


# ----- the two commands' results -------------------------------------------------------------------


def run_estimate(
    path: Path,
    settings: Settings,
    *,
    models: Sequence[str],
    sample: int,
    seed: int,
    console: Console,
    endpoint: SampleEndpoint | None = None,
    spec: TableSpec | None = None,
) -> tuple[Estimate, SampleReport | None]:
    """Plan, measure a sample when asked, and price: the whole of `batchline estimate`.

    `endpoint` is where the sample goes (required with `sample`); it is connected only when one is sent.
    """
    prices = price_book(settings)
    encodings = [prices.price_for(model).encoding for model in models]
    planned = plan_file(path, settings, console, spec=spec, recount_encodings=encodings, sample_size=sample, seed=seed)
    report = None
    if sample:
        chosen = planned.outputs.draw_sample()
        if not chosen:
            console.print("--sample: no valid request of this file produces output tokens; nothing sent")
        else:
            with endpoint.connect(settings) as (base_url, api_key):
                report = measure_sample(
                    chosen,
                    requested=sample,
                    base_url=base_url,
                    api_key=api_key,
                    settings=settings,
                    console=console,
                    emulator=endpoint.emulator,
                )
    estimate = build_estimate(
        planned.summary,
        prices,
        invalid_by_code=planned.outputs.invalid_by_code,
        measured=report.measurements if report else (),
    )
    estimate.comparisons = compare_models(estimate, prices, models, planned.recounted_prompt_tokens)
    return estimate, report


def run_validate(path: Path, settings: Settings, *, console: Console) -> tuple[PlanSummary, list[InvalidLine]]:
    planned = plan_file(path, settings, console, keep_invalid=True)
    return planned.summary, sorted(planned.outputs.invalid, key=lambda error: error.line)


# ----- rendering ------------------------------------------------------------------------------------


def _table(title: str) -> Table:
    """Compact tables: the numbers stay whole on an 80-column terminal, names fold instead."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


def output_source_note(estimate: Estimate, report: SampleReport | None, assumed_output_tokens: int) -> str:
    if estimate.output_tokens_source == OUTPUT_FROM_SAMPLE and report is not None:
        measured = len(report.measurements)
        per_group = ", ".join(
            f"{g.sampled} {g.endpoint.removeprefix('/v1/')} {g.model}" for g in estimate.groups if g.sampled
        )
        answered_by = " answered by the built-in emulator, not the model" if report.emulator else ""
        return (
            f"output tokens: extrapolated from {measured} sampled request{'s' if measured != 1 else ''}{answered_by} "
            f"({per_group}): each group's assumed output x its sample's real/assumed ratio "
            f"({count(sum(m.output_tokens for m in report.measurements))} real of "
            f"{count(sum(m.assumed_output_tokens for m in report.measurements))} assumed in all); "
            f"{count(estimate.output_tokens_assumed)} if every request used its cap"
        )
    return (
        "output tokens: assumed from max_tokens (each request's own cap, an upper bound; "
        f"{assumed_output_tokens} for a request that sets none)"
    )


def _priced_models(estimate: Estimate) -> list[str]:
    return list(dict.fromkeys([*(g.model for g in estimate.groups), *(c.model for c in estimate.comparisons)]))


def model_prices(estimate: Estimate, settings: Settings) -> dict[str, dict]:
    """Each model's rates as priced here (USD per million tokens) and where they come from."""
    prices = price_book(settings)
    quoted = {}
    for model in _priced_models(estimate):
        price = prices.price_for(model)
        batch_input, batch_output = prices.batch_rates(model)
        quoted[model] = {
            "source": prices.source_of(model),
            "input_per_million": price.input_per_million,
            "output_per_million": price.output_per_million,
            "batch_input_per_million": batch_input,
            "batch_output_per_million": batch_output,
            "long_context": price.long_context.model_dump() if price.long_context is not None else None,
        }
    return quoted


def price_lines(estimate: Estimate, settings: Settings) -> list[str]:
    lines = []
    for model, quoted in model_prices(estimate, settings).items():
        long = quoted["long_context"]
        lines.append(
            f"price of {model}: ${quoted['input_per_million']:g} in, ${quoted['output_per_million']:g} out per "
            f"million tokens realtime; ${quoted['batch_input_per_million']:g} in, "
            f"${quoted['batch_output_per_million']:g} out batch"
            + (f"; dearer above {count(long['above_prompt_tokens'])} prompt tokens" if long else "")
            + f" (from {quoted['source']})"
        )
    return lines


def estimate_json(estimate: Estimate, report: SampleReport | None, *, path: Path, settings: Settings) -> dict:
    sample = None
    if report is not None:
        sample = {
            "requested": report.requested,
            "sent": report.sent,
            "measured": len(report.measurements),
            "lines": report.lines,
            "failed": [{"line": r.line, "custom_id": r.custom_id, "message": m} for r, m in report.failures],
            "output_tokens": sum(m.output_tokens for m in report.measurements),
            "output_tokens_assumed": sum(m.assumed_output_tokens for m in report.measurements),
            "input_tokens": report.input_tokens,
            "cost_usd_realtime": report.cost_usd_realtime,
            "base_url": report.base_url,
            "emulator": report.emulator,
        }
    return {
        "input": str(path),
        "input_lines": estimate.input_lines,
        "valid": estimate.valid,
        "invalid_lines": estimate.invalid,
        "invalid_by_code": estimate.invalid_by_code,
        "input_tokens": estimate.input_tokens,
        "output_tokens": estimate.output_tokens,
        "output_tokens_assumed": estimate.output_tokens_assumed,
        "output_tokens_source": estimate.output_tokens_source,
        "cost_usd_batch": estimate.cost_usd_batch,
        "cost_usd_realtime": estimate.cost_usd_realtime,
        "shards": estimate.shards,
        "batches": estimate.shards,
        "assumed_output_tokens_per_request": settings.assumed_output_tokens,
        "groups": [asdict(group) for group in estimate.groups],
        "models": [asdict(comparison) for comparison in estimate.comparisons],
        "prices": model_prices(estimate, settings),
        "sample": sample,
    }


def print_estimate(
    estimate: Estimate, report: SampleReport | None, *, path: Path, settings: Settings, console: Console
) -> None:
    table = _table(f"estimate of {path.name}")
    # The names fold to make room: the counts and the dollars are never cut.
    table.add_column("endpoint", overflow="fold", min_width=6)
    table.add_column("model", overflow="fold", min_width=8)
    for name in ("requests", "shards", "input\ntokens", "output\ntokens", "batch", "realtime"):
        table.add_column(name, justify="right", no_wrap=True)
    for g in estimate.groups:
        table.add_row(
            g.endpoint.removeprefix("/v1/"),
            g.model,
            count(g.requests),
            count(g.shards),
            count(g.input_tokens),
            count(g.output_tokens),
            usd(g.cost_usd_batch),
            usd(g.cost_usd_realtime),
            end_section=g is estimate.groups[-1],
        )
    table.add_row(
        "total",
        "",
        count(estimate.valid),
        count(estimate.shards),
        count(estimate.input_tokens),
        count(estimate.output_tokens),
        usd(estimate.cost_usd_batch),
        usd(estimate.cost_usd_realtime),
        style="bold",
    )
    console.print(table)
    lines = [
        f"{count(estimate.input_lines)} lines: {count(estimate.valid)} valid, {count(estimate.invalid)} invalid"
        + (
            " (" + ", ".join(f"{count} {code}" for code, count in estimate.invalid_by_code.items()) + ")"
            if estimate.invalid
            else ""
        ),
        f"shards: {estimate.shards} (one OpenAI batch each, cut as the pipeline will: "
        f"≤ {count(settings.shard_max_requests)} requests, ≤ {count(settings.shard_max_bytes)} bytes, "
        "≤ the model's enqueued-token limit)",
        "input tokens: exact (tiktoken, chat messages with their per-message overhead)",
        output_source_note(estimate, report, settings.assumed_output_tokens),
        *price_lines(estimate, settings),
    ]
    if report is not None and report.emulator:
        lines += [
            f"sample: {report.sent} requests sent realtime to the built-in emulator ({report.base_url}), "
            f"{len(report.measurements)} answered, {len(report.failures)} failed; at realtime prices they would "
            f"cost {usd(report.cost_usd_realtime)}, the emulator charges nothing",
            "the sampled output lengths are the emulator's synthetic answers, not the model's: set OPENAI_API_KEY "
            "(and OPENAI_BASE_URL for another server) and drop --sample-emulator to measure the model",
        ]
    elif report is not None:
        lines.append(
            f"sample: {report.sent} requests sent realtime to {report.base_url}, {len(report.measurements)} answered, "
            f"{len(report.failures)} failed; it cost {usd(report.cost_usd_realtime)}"
        )
    if report is not None:
        lines += [f"  line {r.line} ({r.custom_id}) failed: {message}" for r, message in report.failures[:5]]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if estimate.comparisons:
        _print_comparisons(estimate, console)


def _print_comparisons(estimate: Estimate, console: Console) -> None:
    table = _table("the same requests with another model")
    table.add_column("model", overflow="fold", min_width=8)
    table.add_column("encoding", overflow="fold", min_width=6)
    for name in ("input\ntokens", "output\ntokens", "batch", "realtime", "vs file"):
        table.add_column(name, justify="right", no_wrap=True)
    for c in estimate.comparisons:
        ratio = f"×{c.cost_usd_batch / estimate.cost_usd_batch:.2f}" if estimate.cost_usd_batch else "-"
        table.add_row(
            c.model,
            c.encoding,
            count(c.input_tokens),
            count(c.output_tokens),
            usd(c.cost_usd_batch),
            usd(c.cost_usd_realtime),
            ratio,
        )
    console.print(table)
    console.print(
        "input tokens recounted with each model's own encoding; output tokens are the file's "
        "(as estimated above), since another model's answers cannot be counted before it is asked",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def print_invalid_lines(invalid: Sequence[InvalidLine], console: Console) -> None:
    table = _table("invalid lines")
    table.add_column("line", justify="right")
    table.add_column("custom_id")
    table.add_column("code")
    table.add_column("message", overflow="fold")
    for error in invalid:
        table.add_row(str(error.line), error.custom_id or "", error.code, error.message)
    console.print(table)


def invalid_json(invalid: Sequence[InvalidLine]) -> list[dict]:
    return [
        {"line": error.line, "custom_id": error.custom_id, "code": error.code, "message": error.message}
        for error in invalid
    ]


def validate_summary(summary: PlanSummary, invalid: Sequence[InvalidLine]) -> str:
    if not summary.input_lines:
        return "no request: every line of the file is blank"
    if not invalid:
        return f"{count(summary.input_lines)} non-blank lines: all valid"
    return (
        f"{count(summary.input_lines)} non-blank lines: {count(summary.valid)} valid, {count(len(invalid))} invalid "
        "(the pipeline would report the invalid ones in errors.jsonl and send the rest)"
    )
