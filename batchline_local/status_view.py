"""How `batchline status` draws jobs: a table of recent jobs, or one job's bars per route and shard."""

from __future__ import annotations

from collections import Counter

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchline_local.job_progress import JobProgress, ShardProgress, Spend

STATUS_STYLES = {
    "succeeded": "green",
    "completed_with_errors": "yellow",
    "paused": "yellow",
    "failed": "red",
    "refused": "red",
    "cancelled": "magenta",
    "cancelling": "magenta",
    "stopped": "red",
    "collected": "green",
    "budget_stopped": "yellow",
}
BAR_WIDTH = 28
SHARD_BAR_WIDTH = 20
MODEL_WIDTH = 22
WIDE = 120  # columns from which the batch ids are shown


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, "cyan"))


def _bar(done: int, total: int, finished: bool = False, *, width: int = BAR_WIDTH) -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=min(done, total) if total else int(finished), width=width)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _when(moment: str | None) -> str:
    """An ISO time to the second, as the table stores it (UTC)."""
    return (moment or "")[:19].replace("T", " ")


def jobs_table(jobs: list[JobProgress], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("job", "left"),
        ("status", "left"),
        ("route", "left"),
        ("requests done", "right"),
        ("cost", "right"),
        ("started (UTC)", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("job", "started (UTC)"))  # type: ignore[arg-type]
    for job in jobs:
        table.add_row(
            job.job_id,
            _status(job.status),
            job.route or "-",
            f"{job.done:,}/{job.valid:,}",
            f"${job.cost_usd:,.4f}",
            _when(job.started_at),
        )
    return table


def _shard_row(shard: ShardProgress, *, with_batch_id: bool) -> tuple:
    if shard.batch_id:
        batch = Text(shard.batch_status or "?", style="cyan")  # its done count is in the shard's bar
        if shard.batch_failed:
            batch.append(f" ({shard.batch_failed:,} failed)", style="yellow")
    elif shard.sent_realtime:
        batch = Text(f"{shard.sent_realtime:,} sent realtime")
    else:
        batch = Text("-")
    status = _status(shard.status)
    if shard.round:
        status.append(f" r{shard.round + 1}")  # a later round: the requests worth another try
    row = (
        shard.shard_id,
        shard.model,
        status,
        _bar(shard.done, shard.on_batch, shard.ended, width=SHARD_BAR_WIDTH),
        f"{shard.done:,}/{shard.on_batch:,}",
        batch,
    )
    return (*row, shard.batch_id or "") if with_batch_id else row


def _shards_table(shards: list[ShardProgress], width: int) -> Table:
    """A row per shard; the batch ids only where they fit (they are whole in --json)."""
    with_batch_id = width >= WIDE
    table = Table(box=None, pad_edge=False, show_edge=False, collapse_padding=True)
    for name in ("shard", "model", "status", "", "requests", "batch", *(("batch id",) if with_batch_id else ())):
        # What gives way in a narrow terminal: the model's name and the batch's state, cut short.
        shrinks = name in ("model", "batch", "batch id")
        table.add_column(
            name,
            justify="right" if name == "requests" else "left",
            no_wrap=not shrinks,
            max_width=MODEL_WIDTH if name == "model" else None,
            overflow="ellipsis",
        )
    for shard in shards:
        table.add_row(*_shard_row(shard, with_batch_id=with_batch_id))
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
            f"{done:,}/{view.batch_total:,}",
            f"{_count(len(view.shards), 'shard')}: {said}" if view.shards else "not planned yet",
        )
    if view.realtime_total or view.route == "realtime":
        done = view.realtime_total if view.finished else view.realtime_done
        table.add_row(
            "realtime", _bar(done, view.realtime_total, view.finished), f"{done:,}/{view.realtime_total:,}", ""
        )
    return table


def spend_line(spend: Spend) -> RenderableType:
    said = f"${spend.spent_usd:,.4f} spent"
    if spend.in_flight_usd:
        said += f", ${spend.in_flight_usd:,.4f} reserved in flight"
    if spend.held_usd:
        said += f", ${spend.held_usd:,.4f} held for planned work"
    if spend.cap_usd is None:
        return Text(f"spend    {said} (no job budget)")
    grid = Table.grid(padding=(0, 2))
    used = spend.spent_usd + spend.in_flight_usd
    grid.add_row(
        "budget",
        ProgressBar(total=max(spend.cap_usd, 1e-9), completed=min(used, spend.cap_usd), width=BAR_WIDTH),
        f"{said} of ${spend.cap_usd:,.4f} ({used / spend.cap_usd:.0%})",
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
        f" (route {view.route or 'not chosen yet'}; {view.input_lines:,} lines, {view.valid:,} valid, "
        f"{view.invalid:,} invalid; started {_when(view.started_at)}"
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
