"""How `batchline status` draws jobs: a table of recent jobs, or one job's bars per route and shard."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from batchline.domain.statuses import JobStatus, ShardStatus
from batchline.presentation.numbers import count, percent, usd
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchline_cli.job_progress import JobProgress, ShardProgress, Spend

# A job's or shard's status as shown (the enums' values, and the two a cancel adds), by colour.
STATUS_STYLES = {
    JobStatus.SUCCEEDED: "green",
    JobStatus.COMPLETED_WITH_ERRORS: "yellow",
    JobStatus.PAUSED: "yellow",
    JobStatus.FAILED: "red",
    JobStatus.REFUSED: "red",
    JobStatus.CANCELLED: "magenta",
    "cancelling": "magenta",
    "stopped": "red",
    ShardStatus.COLLECTED: "green",
    ShardStatus.BUDGET_STOPPED: "yellow",
}
BAR_WIDTH = 28
SHARD_BAR_WIDTH = 20
NARROW_BAR_WIDTH = 10
MODEL_WIDTH = 22
WIDE = 120  # columns from which the batch ids are shown


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, "cyan"))


def _bar(done: int, total: int, finished: bool = False, *, width: int = BAR_WIDTH) -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=min(done, total) if total else int(finished), width=width)


def _count(number: int, noun: str) -> str:
    return f"{count(number)} {noun}{'' if number == 1 else 's'}"


def _when(moment: str | None) -> str:
    """An ISO time to the second, as the table stores it (UTC)."""
    return (moment or "")[:19].replace("T", " ")


class _JobsTable:
    """The recent jobs, laid out for the width they are printed in (known only then)."""

    def __init__(self, jobs: list[JobProgress], title: str) -> None:
        self.jobs, self.title = jobs, title

    def __rich_console__(self, console, options):  # noqa: ANN001, ANN204 - rich's protocol
        yield _fitted_jobs_table(self.jobs, self.title, options.max_width)


JOB_HEADERS = ("job", "status", "route", "requests done", "cost", "started (UTC)")
_GAP = 2  # what a column boundary takes in these tables (padding collapsed)


def jobs_table(jobs: list[JobProgress], *, title: str) -> RenderableType:
    """A row per job that fits the terminal: when the columns do not, the status, route and start go
    under the job id, which keeps a line of its own; the counts and the dollars are never cut."""
    return _JobsTable(jobs, title)


def _fitted_jobs_table(jobs: list[JobProgress], title: str, width: int) -> Table:
    rows = [
        (
            job,
            f"{count(job.done)}/{count(job.valid)}",
            usd(job.cost_usd),
            _when(job.started_at),
        )
        for job in jobs
    ]
    widest = [max([len(JOB_HEADERS[0])] + [len(job.job_id) for job, *_ in rows])]
    widest += [max([len(JOB_HEADERS[1])] + [len(job.status) for job, *_ in rows])]
    widest += [max([len(JOB_HEADERS[2])] + [len(job.route or "-") for job, *_ in rows])]
    widest += [max([len(header)] + [len(row[i]) for row in rows]) for i, header in ((1, JOB_HEADERS[3]), (2, "cost"))]
    widest += [len(JOB_HEADERS[5])]
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    if sum(widest) + _GAP * (len(widest) - 1) <= width:
        for name in JOB_HEADERS:
            numbers = name in ("requests done", "cost")
            table.add_column(name, justify="right" if numbers else "left", no_wrap=True)
        for job, done, cost, started in rows:
            table.add_row(job.job_id, _status(job.status), job.route or "-", done, cost, started)
        return table
    table.add_column("job: status, route, started (UTC)", overflow="fold")
    table.add_column("requests done", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for job, done, cost, started in rows:
        said = Text(job.job_id + "\n", style="bold")
        said.append_text(_status(job.status))
        said.append(f" · {job.route or '-'} · {started}", style="dim")
        table.add_row(said, done, cost)
    return table


def _shard_row(shard: ShardProgress, *, with_batch_id: bool, bar_width: int) -> tuple:
    if shard.batch_id:
        batch = Text(shard.batch_status or "?", style="cyan")  # its done count is in the shard's bar
        if shard.batch_failed:  # narrow: on a line of its own, not split across two
            batch.append(f"{' ' if with_batch_id else chr(10)}({count(shard.batch_failed)} failed)", style="yellow")
        if not with_batch_id:  # no column of its own: under its state, folded, whole
            batch.append(f"\n{shard.batch_id}", style="dim")
    elif shard.sent_realtime:
        batch = Text(f"{count(shard.sent_realtime)} sent realtime")
    else:
        batch = Text("-")
    status = _status(shard.status)
    if shard.round:
        status.append(f" r{shard.round + 1}")  # a later round: the requests worth another try
    row = (
        shard.shard_id,
        shard.model,
        status,
        _bar(shard.done, shard.on_batch, shard.ended, width=bar_width),
        f"{count(shard.done)}/{count(shard.on_batch)}",
        batch,
    )
    return (*row, shard.batch_id or "") if with_batch_id else row


def _shards_table(shards: list[ShardProgress], width: int) -> Table:
    """A row per shard. Wide, the batch id has a column; narrow, it goes under the batch's state,
    and the bars are shorter. Names and ids fold onto more lines rather than being cut."""
    with_batch_id = width >= WIDE
    bar_width = SHARD_BAR_WIDTH if with_batch_id else NARROW_BAR_WIDTH
    table = Table(box=None, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("shard", no_wrap=True)
    table.add_column("model", overflow="fold", max_width=MODEL_WIDTH, min_width=8)
    table.add_column("status", overflow="fold", min_width=9)
    table.add_column("", no_wrap=True, width=bar_width)
    table.add_column("requests", justify="right", no_wrap=True)
    table.add_column("batch", overflow="fold", min_width=12, ratio=1)
    if with_batch_id:
        table.add_column("batch id", overflow="fold")
    for shard in shards:
        table.add_row(*_shard_row(shard, with_batch_id=with_batch_id, bar_width=bar_width))
    return table


def _routes(view: JobProgress) -> Table:
    table = Table.grid(padding=(0, 2))
    if view.route != "realtime":
        statuses = Counter(shard.status for shard in view.shards)
        said = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        done = view.batch_total if view.finished else view.batch_done
        table.add_row(
            "batch",
            _bar(done, view.batch_total, view.finished),
            f"{count(done)}/{count(view.batch_total)}",
            f"{_count(len(view.shards), 'shard')}: {said}" if view.shards else "not planned yet",
        )
    if view.realtime_total or view.route == "realtime":
        done = view.realtime_total if view.finished else view.realtime_done
        table.add_row(
            "realtime",
            _bar(done, view.realtime_total, view.finished),
            f"{count(done)}/{count(view.realtime_total)}",
            "",
        )
    return table


def spend_line(spend: Spend) -> RenderableType:
    said = f"{usd(spend.spent_usd)} spent"
    if spend.in_flight_usd:
        said += f", {usd(spend.in_flight_usd)} reserved in flight"
    if spend.held_usd:
        said += f", {usd(spend.held_usd)} held for planned work"
    if spend.cap_usd is None:
        return Text(f"spend    {said} (no job budget)")
    grid = Table.grid(padding=(0, 2))
    used = spend.spent_usd + spend.in_flight_usd
    grid.add_row(
        "budget",
        ProgressBar(total=max(spend.cap_usd, 1e-9), completed=min(used, spend.cap_usd), width=BAR_WIDTH),
        f"{said} of {usd(spend.cap_usd)} ({percent(used / spend.cap_usd)})",
    )
    return grid


def job_view(view: JobProgress, *, width: int = WIDE, max_shards: int = 25) -> RenderableType:
    """One job: its status, a bar per route, a bar per shard and its spend against its budget.

    `width` is the terminal's: a narrow one leaves the batch ids out.
    """
    head = Text.assemble(
        ("job ", "bold"),
        (view.job_id, "bold"),
        ": ",
        _status(view.status),
        f" (route {view.route or 'not chosen yet'}; {count(view.input_lines)} lines, {count(view.valid)} valid, "
        f"{count(view.invalid)} invalid; started {_when(view.started_at)}"
        + (f", finished {_when(view.finished_at)}" if view.finished_at else "")
        + ")",
    )
    parts: list[RenderableType] = [head, _routes(view)]
    if view.shards and view.route != "realtime":
        parts.append(_shards_table(view.shards[:max_shards], width))
        if len(view.shards) > max_shards:
            parts.append(Text(f"... and {len(view.shards) - max_shards} more shards"))
    parts.append(spend_line(view.spend))
    if view.status == "stopped":
        parts.append(Text("cancelled with --now: the execution was stopped, and no outputs will be written", "red"))
    elif view.cancel_requested and not view.finished:
        if view.route == "realtime":
            said = "the workers record every request not yet sent as an error, then the outputs are written"
        else:
            said = (
                "no new batch is sent; the execution collects what the cancelled batches finished and writes "
                "the outputs"
            )
        parts.append(Text(f"cancel requested: {said}", style="magenta"))
    if view.message:
        parts.append(Text(view.message, style=STATUS_STYLES.get(view.table_status, "")))
    return Group(*parts)


def watch(
    view: JobProgress,
    refresh: Callable[[], JobProgress],
    console: Console,
    *,
    interval: float,
    transient: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> JobProgress:
    """Redraw the job every `interval` seconds until it ends; the last frame stays, on lines of its own.

    rich ends a live display with a newline only on a terminal: piped or captured, the last frame
    would run into whatever is printed next (the shell's prompt), so the newline is written here.
    """
    live = Live(job_view(view, width=console.width), console=console, refresh_per_second=4, transient=transient)
    try:
        with live:
            while not view.finished:
                sleep(interval)
                view = refresh()
                live.update(job_view(view, width=console.width))
    finally:
        if not transient and not console.is_terminal:
            console.line()
    return view
