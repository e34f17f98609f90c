"""report.html: one page about a finished job, for the person who ran it.

Pure: the summary, the shard records and the progress points in, one HTML string out. The page
holds its CSS and its SVG charts inline and nothing else (no script, no font, no fetch; its
Content-Security-Policy forbids them), so it opens the same from S3, a mail or a laptop's disk.
Every text that came from a user or a provider (job id, message, model, batch id, error code) is
escaped, so a request named ``<script>`` stays text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import PurePosixPath

from batchline.domain.layout import JobLayout
from batchline.domain.numbers import count, percent, usd

REPORT_FILE = "report.html"
ROUTE_BATCH, ROUTE_REALTIME = "batch", "realtime"
ROUTES = (ROUTE_BATCH, ROUTE_REALTIME)

CHART_PROGRESS = "chart-progress"
CHART_SPEND = "chart-spend"
CHART_TOKENS = "chart-tokens"
CHART_SLOWEST = "chart-slowest"
CHART_IDS = (CHART_PROGRESS, CHART_SPEND, CHART_TOKENS, CHART_SLOWEST)

# One colour per meaning, the same in every chart (and what the browser test looks for).
ROUTE_COLOURS = {ROUTE_BATCH: "#2563eb", ROUTE_REALTIME: "#ea580c"}
OTHER_ROUTE_COLOUR = "#7c3aed"
SPENT_COLOUR = "#059669"
MONTH_COLOUR = "#6ee7b7"
ESTIMATE_COLOUR = "#94a3b8"
CAP_COLOUR = "#dc2626"
UNFINISHED_COLOUR = "#be123c"
SLOWEST_LIMIT = 10

_WIDTH = 760
_STATUS_CLASSES = {"succeeded", "completed_with_errors", "failed", "paused"}


def report_key(layout: JobLayout) -> str:
    """Where the report lives: next to summary.json."""
    return str(PurePosixPath(layout.summary).with_name(REPORT_FILE))


@dataclass(frozen=True, slots=True)
class Progress:
    """Requests that got their final outcome on a route at one moment.

    A collected batch round (with the batch's own facts), or the realtime outcomes of one second.
    """

    at: str
    route: str
    done: int
    shard_id: str | None = None
    round: int | None = None
    batch_id: str | None = None
    submitted_at: str | None = None
    requests: int | None = None
    batch_status: str | None = None

    @classmethod
    def from_item(cls, item: dict) -> Progress:
        """From a stored progress item: attributes it does not know are ignored."""
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in item.items() if name in known})


@dataclass(frozen=True, slots=True)
class RouteSeries:
    route: str
    points: list[tuple[float, int]]  # (seconds since the start, requests done so far)
    start_and_end_only: bool = False  # no progress recorded: a straight line from start to end


@dataclass(frozen=True, slots=True)
class BatchRun:
    batch_id: str
    shard_id: str
    round: int | None
    model: str | None
    submitted_at: str
    ended_at: str
    seconds: float
    requests: int | None
    status: str
    collected: bool


@dataclass(frozen=True, slots=True)
class SlowRequest:
    """One realtime request's call: how long the provider took to answer it (the worker timed it)."""

    line: int
    custom_id: str
    model: str | None
    seconds: float
    answered_at: str | None
    outcome: str  # "succeeded", or the error's code


def slowest_requests(requests: Iterable[SlowRequest], limit: int = SLOWEST_LIMIT) -> list[SlowRequest]:
    """The `limit` slowest calls, slowest first (the earlier line first among equals)."""
    return sorted(requests, key=lambda request: (-request.seconds, request.line))[:limit]


# -- the figures ---------------------------------------------------------------------------------


def _moment(text: object) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def progress_series(summary: dict, progress: Sequence[Progress]) -> tuple[datetime | None, float, list[RouteSeries]]:
    """(start, span in seconds, one cumulative series per route) of the requests done over time.

    The route the job took gets a straight line from start to end when nothing was recorded for
    it (a job run before progress was recorded), so the chart never claims that nothing was done.
    """
    timed = [(moment, point) for point in progress if (moment := _moment(point.at)) is not None and point.done > 0]
    ends = [_moment(summary.get("started_at")), _moment(summary.get("finished_at"))]
    moments = [moment for moment, _ in timed] + [moment for moment in ends if moment is not None]
    if not moments:
        return None, 0.0, []
    start = min(moments)
    span = (max(moments) - start).total_seconds()
    routes = list(ROUTES) + sorted({point.route for _, point in timed} - set(ROUTES))
    series, recorded = [], 0
    for route in routes:
        steps = sorted(
            ((moment - start).total_seconds(), point.done) for moment, point in timed if point.route == route
        )
        if not steps:
            continue
        total, points = 0, [(0.0, 0)]
        for seconds, done in steps:
            total += done
            points.append((seconds, total))
        points.append((span, total))
        series.append(RouteSeries(route, points))
        recorded += total
    missing = int(summary.get("succeeded") or 0) + int(summary.get("failed") or 0) - recorded
    route = summary.get("route")
    if missing > 0 and route and all(line.route != route for line in series):
        series.append(RouteSeries(route, [(0.0, 0), (span, missing)], start_and_end_only=True))
    return start, span, series


def slowest_batches(
    summary: dict, shards: Sequence[dict], progress: Sequence[Progress], limit: int = SLOWEST_LIMIT
) -> list[BatchRun]:
    """The batches that took longest from creation to collection, slowest first.

    Every collected round is known from its progress point; a shard's last round also from the
    shard record. A batch never collected (its shard failed or the job stopped) counts until the
    job's end.
    """
    models = {shard.get("shard_id"): shard.get("model") for shard in shards}
    runs: dict[str, BatchRun] = {}

    def add(batch_id, shard_id, round_number, submitted_at, ended_at, requests, status, collected) -> None:
        began, ended = _moment(submitted_at), _moment(ended_at)
        if not batch_id or began is None or ended is None or ended < began or batch_id in runs:
            return
        runs[batch_id] = BatchRun(
            batch_id=str(batch_id),
            shard_id=str(shard_id),
            round=round_number,
            model=models.get(shard_id),
            submitted_at=str(submitted_at),
            ended_at=str(ended_at),
            seconds=(ended - began).total_seconds(),
            requests=requests,
            status=str(status or "?"),
            collected=collected,
        )

    for point in progress:
        add(
            point.batch_id,
            point.shard_id,
            point.round,
            point.submitted_at,
            point.at,
            point.requests,
            point.batch_status,
            True,
        )
    for shard in shards:
        rounds = int(shard.get("rounds_collected") or 0)
        last = rounds - 1 if rounds else None
        add(
            shard.get("collected_batch_id"),
            shard.get("shard_id"),
            last,
            shard.get("submitted_at"),
            shard.get("collected_at"),
            shard.get("requests") if last == 0 else None,
            shard.get("batch_status"),
            True,
        )
        if shard.get("batch_id") and shard.get("batch_id") != shard.get("collected_batch_id"):
            # Created, never collected: it ran until the job stopped waiting for it.
            add(
                shard.get("batch_id"),
                shard.get("shard_id"),
                int(shard.get("round") or 0),
                shard.get("submitted_at"),
                summary.get("finished_at"),
                shard.get("round_requests") or (shard.get("requests") if not shard.get("round") else None),
                f"{shard.get('batch_status') or 'in flight'}, not collected ({shard.get('status')})",
                False,
            )
    return sorted(runs.values(), key=lambda run: run.seconds, reverse=True)[:limit]


def tokens_by_route(summary: dict, shards: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """(input, output) tokens per route: shards count their batches, the rest went realtime."""
    batch_in = sum(int(shard.get("input_tokens") or 0) for shard in shards)
    batch_out = sum(int(shard.get("output_tokens") or 0) for shard in shards)
    return {
        "batch": (batch_in, batch_out),
        "realtime": (
            max(0, int(summary.get("input_tokens") or 0) - batch_in),
            max(0, int(summary.get("output_tokens") or 0) - batch_out),
        ),
    }


# -- formatting ------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _clock(text: object) -> str:
    moment = _moment(text)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _value_ticks(maximum: float, count: int = 5) -> list[float]:
    step = _nice_step(max(maximum, 1) / count)
    return [step * i for i in range(math.ceil(max(maximum, 1) / step) + 1)]


_DAY = 86400
# Steps a reader counts in: seconds, minutes, hours, days.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, _DAY)


def time_ticks(span: float) -> list[tuple[float, str]]:
    """(seconds, label) of the time axis: six steps at most, labelled in the step's own unit."""
    step = next((s for s in _TIME_STEPS if span / s <= 6), _DAY * _nice_step(span / 6 / _DAY))
    size, unit = next((size, unit) for size, unit in ((_DAY, "d"), (3600, "h"), (60, "min"), (1, "s")) if step >= size)
    return [(step * i, f"{step * i / size:g} {unit}" if i else "0") for i in range(int(span // step) + 1)]


def _short(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


# -- SVG pieces ------------------------------------------------------------------------------------


def _svg_open(chart_id: str, height: float, title: str, desc: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height:.0f}" '
        f'width="{_WIDTH}" height="{height:.0f}" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{_e(title)}</title><desc id="{chart_id}-desc">{_e(desc)}</desc>'
    )


def _text(x: float, y: float, content: str, *, cls: str = "", anchor: str = "start") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{_e(content)}</text>'


def _legend(items: Iterable[tuple[str, str, bool]], x: float, y: float) -> list[str]:
    """Swatches in a row: (label, colour, dashed)."""
    parts = []
    for label, colour, dashed in items:
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(
            f'<line class="swatch" x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 18:.1f}" y2="{y - 4:.1f}" '
            f'stroke="{colour}" stroke-width="6"{dash}/>'
        )
        parts.append(_text(x + 24, y, label, cls="legend"))
        x += 34 + 6.6 * len(label)
    return parts


def _empty_chart(chart_id: str, title: str, why: str) -> str:
    return _svg_open(chart_id, 60, title, why) + _text(_WIDTH / 2, 36, why, cls="note", anchor="middle") + "</svg>"


def _route_colour(route: str) -> str:
    return ROUTE_COLOURS.get(route, OTHER_ROUTE_COLOUR)


def _step_path(points: list[tuple[float, int]], x, y) -> str:
    """A cumulative count as steps, at most one vertex per horizontal pixel."""
    vertices: list[tuple[float, float]] = []
    for seconds, done in points:
        vertex = (round(x(seconds), 1), round(y(done), 1))
        if vertices and int(vertices[-1][0]) == int(vertex[0]) and len(vertices) > 1:
            vertices[-1] = (vertices[-1][0], vertex[1])
        else:
            vertices.append(vertex)
    path = [f"M{vertices[0][0]},{vertices[0][1]}"]
    path += [f"H{vx}V{vy}" for vx, vy in vertices[1:]]
    return "".join(path)


def progress_chart(summary: dict, progress: Sequence[Progress]) -> str:
    title = "Requests done over time, per route"
    start, span, series = progress_series(summary, progress)
    if not series:
        return _empty_chart(CHART_PROGRESS, title, "No request got an outcome: nothing to plot.")
    height, left, right, top, bottom = 300, 64, 24, 34, 46
    plot_w, plot_h = _WIDTH - left - right, height - top - bottom
    valid = int(summary.get("input_lines") or 0) - int(summary.get("invalid") or 0)
    y_ticks = _value_ticks(max([valid] + [line.points[-1][1] for line in series]))
    y_max, span = y_ticks[-1], span or 1.0

    def x(seconds: float) -> float:
        return left + plot_w * seconds / span

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / y_max

    finals = ", ".join(f"{line.route} {count(line.points[-1][1])}" for line in series)
    desc = f"Cumulative requests with a final outcome over {duration(span)} since {_clock(start)}: {finals}."
    parts = [_svg_open(CHART_PROGRESS, height, title, desc)]
    for tick in y_ticks:
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        parts.append(_text(left - 8, y(tick) + 4, _short(tick), cls="tick", anchor="end"))
    for tick, label in time_ticks(span):
        parts.append(
            f'<line class="axis" x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}"/>'
        )
        parts.append(_text(x(tick), top + plot_h + 18, label, cls="tick", anchor="middle"))
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    parts.append(_text(left + plot_w, height - 6, "time since the job started", cls="axis-label", anchor="end"))
    if valid > 0:
        parts.append(f'<line class="target" x1="{left}" x2="{left + plot_w}" y1="{y(valid):.1f}" y2="{y(valid):.1f}"/>')
        parts.append(_text(left + 4, y(valid) - 5, f"{count(valid)} valid requests", cls="note"))
    for line in series:
        colour = _route_colour(line.route)
        css = "series estimated" if line.start_and_end_only else "series"
        if line.start_and_end_only:
            (x0, y0), (x1, y1) = ((x(t), y(v)) for t, v in line.points)
            shape = f"M{x0:.1f},{y0:.1f}L{x1:.1f},{y1:.1f}"
        else:
            shape = _step_path(line.points, x, y)
        route_class = line.route if line.route in ROUTES else "other"
        parts.append(f'<path class="{css} route-{route_class}" d="{shape}" stroke="{colour}" fill="none"/>')
    legend = [
        (
            f"{line.route}: {count(line.points[-1][1])}" + (" (start and end only)" if line.start_and_end_only else ""),
            _route_colour(line.route),
            line.start_and_end_only,
        )
        for line in series
    ]
    parts += _legend(legend, left, 18)
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Bar:
    label: str
    segments: tuple[tuple[float, str, str], ...]  # (value, colour, tooltip)
    text: str


@dataclass(frozen=True, slots=True)
class _Panel:
    heading: str | None
    bars: tuple[_Bar, ...]
    markers: tuple[tuple[str, float, str], ...] = ()  # (label, value, colour): dashed lines across the bars


_LABEL_W, _TEXT_W, _ROW_H, _BAR_H = 210, 190, 28, 16


def _scale_ticks(maximum: float, count: int = 4) -> list[float]:
    """Round steps from 0 to at least `maximum` (any size: dollars under a cent too)."""
    if maximum <= 0:
        return [0.0, 1.0]
    step = _nice_step(maximum / count)
    return [step * i for i in range(math.ceil(maximum / step - 1e-9) + 1)]


_AXIS_H = 40


def _bar_chart(
    chart_id: str,
    title: str,
    desc: str,
    panels: Sequence[_Panel],
    legend=(),
    *,
    axis: tuple[Callable[[float], str], str] | None = None,
) -> str:
    """Horizontal bars, every panel on one scale so that bars compare across panels.

    With `axis` = (how a value is written, what the axis says), the scale runs to a round value
    and an axis under the last panel shows it.
    """
    plot_w = _WIDTH - _LABEL_W - _TEXT_W
    top = 30 if legend else 8
    rows_h = sum((22 if p.heading else 0) + (18 if p.markers else 0) + _ROW_H * len(p.bars) for p in panels)
    height = top + rows_h + 8 + (_AXIS_H if axis else 0)
    largest = max(
        [sum(v for v, _, _ in bar.segments) for panel in panels for bar in panel.bars]
        + [v for panel in panels for _, v, _ in panel.markers]
        + [0.0]
    )
    ticks = _scale_ticks(largest) if axis else []
    scale = (ticks[-1] if ticks else largest) or 1.0
    parts = [_svg_open(chart_id, height, title, desc)]
    if legend:
        parts += _legend(legend, _LABEL_W, 18)
    base = top + rows_h + 4
    for tick in ticks:  # under the bars
        tx = _LABEL_W + plot_w * tick / scale
        parts.append(f'<line class="grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{base}"/>')
    y = top
    for panel in panels:
        if panel.heading:
            parts.append(_text(8, y + 15, panel.heading, cls="panel-heading"))
            y += 22
        rows_top = y + (18 if panel.markers else 0)
        for bar in panel.bars:
            middle = rows_top + _ROW_H / 2
            parts.append(_text(_LABEL_W - 10, middle + 4, bar.label, cls="bar-label", anchor="end"))
            x = float(_LABEL_W)
            for value, colour, tooltip in bar.segments:
                width = plot_w * value / scale
                if width <= 0:
                    continue
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{middle - _BAR_H / 2:.1f}" width="{max(width, 1.5):.1f}" '
                    f'height="{_BAR_H}" fill="{colour}"><title>{_e(tooltip)}</title></rect>'
                )
                x += width
            parts.append(_text(x + 6, middle + 4, bar.text, cls="bar-value"))
            rows_top += _ROW_H
        for label, value, colour in panel.markers:
            mx = _LABEL_W + plot_w * value / scale
            parts.append(
                f'<line class="marker" x1="{mx:.1f}" x2="{mx:.1f}" y1="{y + 14}" y2="{rows_top}" stroke="{colour}"/>'
            )
            parts.append(_text(mx, y + 11, label, cls="marker-label", anchor="end" if mx > _WIDTH / 2 else "start"))
        y = rows_top
    if axis:
        written, said = axis
        parts.append(f'<line class="axis scale" x1="{_LABEL_W}" x2="{_LABEL_W + plot_w}" y1="{base}" y2="{base}"/>')
        for tick in ticks:
            tx = _LABEL_W + plot_w * tick / scale
            parts.append(_text(tx, base + 16, written(tick), cls="tick scale-tick", anchor="middle"))
        parts.append(_text(_LABEL_W + plot_w, base + 32, said, cls="axis-label", anchor="end"))
    parts.append("</svg>")
    return "".join(parts)


def spend_chart(summary: dict) -> str:
    budget = summary.get("budget") or {}
    realtime = summary.get("route") == "realtime"
    price = "realtime" if realtime else "batch"
    spent = float(summary.get("cost_usd") or 0)
    estimate = float(summary.get("estimated_cost_usd_if_realtime" if realtime else "estimated_cost_usd") or 0)
    bars = [
        _Bar(f"spent, at {price} price", ((spent, SPENT_COLOUR, f"spent {usd(spent)}"),), usd(spent)),
        _Bar(f"estimate at {price} price", ((estimate, ESTIMATE_COLOUR, f"estimate {usd(estimate)}"),), usd(estimate)),
    ]
    if not realtime:
        if_realtime = float(summary.get("cost_usd_if_realtime") or 0)
        bars.append(
            _Bar(
                "the same sent realtime",
                ((if_realtime, ESTIMATE_COLOUR, f"at realtime price {usd(if_realtime)}"),),
                usd(if_realtime),
            )
        )
    job_cap = budget.get("job_cap_usd")
    markers = ((f"job cap {usd(job_cap)}", float(job_cap), CAP_COLOUR),) if job_cap is not None else ()
    panels = [_Panel("This job", tuple(bars), markers)]
    month_cap = budget.get("monthly_cap_usd")
    others = 0.0
    if budget.get("month"):
        month_spent = float(budget.get("monthly_spent_usd") or 0)
        job_share = min(float(budget.get("job_spent_usd") or spent), month_spent)
        others = month_spent - job_share
        segments = (
            (job_share, SPENT_COLOUR, f"this job {usd(job_share)}"),
            (others, MONTH_COLOUR, f"other jobs {usd(others)}"),
        )
        month_markers = (
            ((f"monthly cap {usd(month_cap)}", float(month_cap), CAP_COLOUR),) if month_cap is not None else ()
        )
        panels.append(
            _Panel(
                f"This month ({budget['month']})",
                (_Bar("spent this month", segments, usd(month_spent)),),
                month_markers,
            )
        )
    caps = [f"job cap {usd(job_cap)}" if job_cap is not None else "no job cap"]
    caps.append(f"monthly cap {usd(month_cap)}" if month_cap is not None else "no monthly cap")
    desc = f"Spent {usd(spent)} at {price} price against an estimate of {usd(estimate)}; {', '.join(caps)}."
    legend = [("this job", SPENT_COLOUR, False), ("estimate", ESTIMATE_COLOUR, False)]
    if others > 0:
        legend.append(("other jobs this month", MONTH_COLOUR, False))
    if job_cap is not None or month_cap is not None:
        legend.append(("cap", CAP_COLOUR, True))
    said = "one dollar scale for every group: " + ", ".join(panel.heading.lower() for panel in panels if panel.heading)
    return _bar_chart(CHART_SPEND, "Spend against budget", desc, panels, legend, axis=(usd, said))


def tokens_chart(summary: dict, shards: Sequence[dict]) -> str:
    per_route = tokens_by_route(summary, shards)
    planned_in = sum(int(shard.get("prompt_tokens") or 0) for shard in shards)
    planned_out = sum(int(shard.get("max_output_tokens") or 0) for shard in shards)

    def used(index: int, kind: str) -> _Bar:
        segments = tuple(
            (float(per_route[route][index]), ROUTE_COLOURS[route], f"{route}: {count(per_route[route][index])} {kind}")
            for route in ROUTES
        )
        total = int(summary.get(f"{kind}_tokens") or 0)
        return _Bar(f"{kind} tokens", segments, count(total))

    bars = [used(0, "input")]
    if planned_in:
        bars.append(_Bar("input, counted when planned", ((planned_in, ESTIMATE_COLOUR, "planned"),), count(planned_in)))
    bars.append(used(1, "output"))
    if planned_out:
        bars.append(_Bar("output, at most (max_tokens)", ((planned_out, ESTIMATE_COLOUR, "cap"),), count(planned_out)))
    desc = (
        f"{count(summary.get('input_tokens'))} input and {count(summary.get('output_tokens'))} output tokens;"
        f" {count(planned_in)} input tokens counted when planned."
    )
    legend = [(route, ROUTE_COLOURS[route], False) for route in ROUTES if any(per_route[route])]
    legend.append(("planned", ESTIMATE_COLOUR, False))
    return _bar_chart(CHART_TOKENS, "Tokens: input and output, per route", desc, [_Panel(None, tuple(bars))], legend)


def slowest_requests_chart(requests: Sequence[SlowRequest]) -> str:
    title = f"The slowest requests (top {SLOWEST_LIMIT}), from the call to its answer"
    if not requests:
        return _empty_chart(CHART_SLOWEST, title, "No call was timed for this job.")
    bars = []
    for request in requests:
        colour = ROUTE_COLOURS[ROUTE_REALTIME] if request.outcome == "succeeded" else UNFINISHED_COLOUR
        tooltip = f"line {request.line} ({request.custom_id}): {duration(request.seconds)}, {request.outcome}"
        text = duration(request.seconds) + ("" if request.outcome == "succeeded" else f" · {request.outcome}")
        bars.append(
            _Bar(f"line {count(request.line)} · {request.custom_id}", ((request.seconds, colour, tooltip),), text)
        )
    desc = "; ".join(f"line {request.line} ({request.custom_id}) {duration(request.seconds)}" for request in requests)
    legend = [("answered", ROUTE_COLOURS[ROUTE_REALTIME], False)]
    if not all(request.outcome == "succeeded" for request in requests):
        legend.append(("answered with an error", UNFINISHED_COLOUR, False))
    return _bar_chart(CHART_SLOWEST, title, desc + ".", [_Panel(None, tuple(bars))], legend)


def slowest_chart(runs: Sequence[BatchRun]) -> str:
    title = f"The slowest batches (top {SLOWEST_LIMIT}), from creation to collection"
    if not runs:
        return _empty_chart(CHART_SLOWEST, title, "No batch was created for this job.")
    bars = []
    for run in runs:
        round_text = "" if run.round is None else f" · round {run.round}"
        extra = f" · {count(run.requests)} requests" if run.requests is not None else ""
        colour = ROUTE_COLOURS["batch"] if run.collected else UNFINISHED_COLOUR
        tooltip = f"{run.batch_id}: {duration(run.seconds)}, {run.status}"
        bars.append(
            _Bar(f"shard {run.shard_id}{round_text}", ((run.seconds, colour, tooltip),), duration(run.seconds) + extra)
        )
    desc = "; ".join(f"{run.batch_id} (shard {run.shard_id}) {duration(run.seconds)}" for run in runs) + "."
    legend = [("collected round", ROUTE_COLOURS["batch"], False)]
    if not all(run.collected for run in runs):
        legend.append(("round never collected", UNFINISHED_COLOUR, False))
    return _bar_chart(CHART_SLOWEST, title, desc, [_Panel(None, tuple(bars))], legend)


# -- the page --------------------------------------------------------------------------------------

_CSS = """
:root{--ink:#0f172a;--soft:#475569;--line:#e2e8f0;--paper:#fff;--tint:#f8fafc}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:var(--tint)}
main{max-width:1120px;margin:0 auto;padding:28px 24px 48px}
header{background:var(--paper);border:1px solid var(--line);border-radius:14px;padding:22px 26px;margin-bottom:18px}
.eyebrow{margin:0;color:var(--soft);font-size:13px;letter-spacing:.06em;text-transform:uppercase}
h1{margin:4px 0 6px;font-size:26px;word-break:break-all}
h2{margin:0 0 8px;font-size:14px;color:var(--soft);text-transform:uppercase;letter-spacing:.05em}
.status{display:inline-block;vertical-align:middle;font-size:14px;padding:2px 10px;border-radius:999px;
background:#e2e8f0;word-break:normal}
.status-succeeded{background:#dcfce7;color:#166534}.status-completed_with_errors{background:#fef9c3;color:#854d0e}
.status-failed{background:#fee2e2;color:#991b1b}.status-paused{background:#e0e7ff;color:#3730a3}
.message{font-size:17px;margin:6px 0}.meta{color:var(--soft);margin:0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:14px;margin-bottom:18px}
.tile,figure,.panel{background:var(--paper);border:1px solid var(--line);border-radius:14px;padding:16px 18px;margin:0}
.big{font-size:24px;font-weight:600;margin:0 0 6px}
dl{display:grid;grid-template-columns:minmax(0,1fr) auto;gap:2px 12px;margin:0}dt{color:var(--soft)}
dd{margin:0;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.wide{grid-column:1/-1;text-align:left;white-space:normal;overflow-wrap:anywhere}dd.wide{margin-bottom:4px}
#outputs dl{grid-template-columns:auto minmax(0,1fr)}#outputs dd{text-align:left;white-space:normal}
.ok{color:#166534}.bad{color:#991b1b}.dim{color:var(--soft)}
.share{display:flex;height:8px;border-radius:4px;overflow:hidden;background:var(--line);margin:8px 0 10px}
.share span{display:block}
.charts{display:grid;gap:14px;margin-bottom:18px}
figure svg{width:100%;height:auto;display:block}
figcaption{color:var(--soft);font-size:13px;margin-top:6px}
figure h2{margin-bottom:4px}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#334155}
svg .tick{fill:#64748b}svg .note,svg .axis-label{fill:#64748b;font-style:italic}
svg .panel-heading{font-weight:600;fill:#0f172a}svg .bar-value{font-variant-numeric:tabular-nums}
svg .grid{stroke:#e2e8f0}svg .axis{stroke:#94a3b8}svg .target{stroke:#94a3b8;stroke-dasharray:4 4}
svg .series{stroke-width:2.5}svg .estimated{stroke-dasharray:7 4}
svg .marker{stroke-width:2;stroke-dasharray:5 3}svg .marker-label{font-weight:600;fill:#b91c1c}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.panel{margin-bottom:18px}.panel:last-child{margin-bottom:0}
footer{color:var(--soft);font-size:12px;text-align:center;margin-top:24px}
@media print{body{background:#fff}header,.tile,figure,.panel{break-inside:avoid}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _field(name: str, shown: str, value: object | None = None) -> str:
    """A figure from the summary, findable by name (and by its exact value) in the page."""
    raw = f' data-value="{_e(value)}"' if value is not None else ""
    return f'<span data-field="{_e(name)}"{raw}>{_e(shown)}</span>'


def _rows(rows: Iterable[tuple[str, str]], *, wide: tuple[str, ...] = ()) -> str:
    """A term and its figure on one line; the terms in `wide` (free text) on two, full width."""
    return "".join(
        f"<dt{' class=wide' if term in wide else ''}>{_e(term)}</dt>"
        f"<dd{' class=wide' if term in wide else ''}>{definition}</dd>"
        for term, definition in rows
    )


def _header(summary: dict) -> str:
    status = str(summary.get("status") or "unknown")
    status_class = status if status in _STATUS_CLASSES else "other"
    started, finished = _moment(summary.get("started_at")), _moment(summary.get("finished_at"))
    took = f" · took {duration((finished - started).total_seconds())}" if started and finished else ""
    route = summary.get("route") or "none"
    return (
        '<header><p class="eyebrow">batchline job report</p>'
        f"<h1>{_field('job_id', summary.get('job_id', '?'))} "
        f'<span class="status status-{status_class}" data-field="status">{_e(status)}</span></h1>'
        f'<p class="message">{_field("message", summary.get("message") or "")}</p>'
        f'<p class="meta">route {_field("route", route)} · {count(summary.get("shards"))} shards · started '
        f"{_e(_clock(summary.get('started_at')))} · finished {_e(_clock(summary.get('finished_at')))}{_e(took)}</p>"
        "</header>"
    )


def _requests_tile(summary: dict) -> str:
    lines = int(summary.get("input_lines") or 0)
    counts = [(name, int(summary.get(name) or 0)) for name in ("succeeded", "failed", "invalid")]
    colours = {"succeeded": "#16a34a", "failed": "#dc2626", "invalid": "#f59e0b"}
    share = "".join(
        f'<span style="width:{100 * n / lines:.3f}%;background:{colours[name]}"></span>' for name, n in counts if lines
    )
    css = {"succeeded": "ok", "failed": "bad", "invalid": "bad"}
    rows = _rows(
        (name, f'<b class="{css[name] if n else "dim"}">{_field(name, count(n), n)}</b>') for name, n in counts
    )
    return (
        '<article class="tile" id="tile-requests"><h2>Requests</h2>'
        f'<p class="big">{_field("input_lines", count(lines), lines)} lines</p>'
        f'<div class="share" aria-hidden="true">{share}</div><dl>{rows}</dl></article>'
    )


def _tokens_tile(summary: dict, shards: Sequence[dict]) -> str:
    planned = sum(int(shard.get("prompt_tokens") or 0) for shard in shards)
    rows = [
        ("input", _field("input_tokens", count(summary.get("input_tokens")), summary.get("input_tokens") or 0)),
        ("output", _field("output_tokens", count(summary.get("output_tokens")), summary.get("output_tokens") or 0)),
    ]
    if planned:
        rows.append(("input, counted when planned", _e(count(planned))))
    total = int(summary.get("input_tokens") or 0) + int(summary.get("output_tokens") or 0)
    return (
        f'<article class="tile" id="tile-tokens"><h2>Tokens</h2><p class="big">{count(total)}</p><dl>{_rows(rows)}</dl>'
        "</article>"
    )


def _llm_cost_tile(summary: dict) -> str:
    cost, if_realtime = summary.get("cost_usd") or 0.0, summary.get("cost_usd_if_realtime") or 0.0
    realtime = summary.get("route") == "realtime"
    rows = [
        (
            "at realtime price" if realtime else "at batch price",
            _field("cost_usd", usd(cost), cost),
        ),
    ]
    if not realtime:
        rows.append(("if sent realtime", _field("cost_usd_if_realtime", usd(if_realtime), if_realtime)))
        if if_realtime > cost:
            rows.append(("saved", f'<b class="ok">{_e(usd(if_realtime - cost))}</b>'))
    estimate_name = "estimated_cost_usd_if_realtime" if realtime else "estimated_cost_usd"
    estimate = summary.get(estimate_name) or 0.0
    rows.append(("estimated before the run", _field(estimate_name, usd(estimate), estimate)))
    return (
        f'<article class="tile" id="tile-llm-cost"><h2>LLM cost</h2><p class="big">{_e(usd(cost))}</p>'
        f"<dl>{_rows(rows)}</dl></article>"
    )


def _aws_tile(summary: dict) -> str:
    aws = summary.get("aws")
    if not aws:
        return (
            '<article class="tile" id="tile-aws"><h2>AWS cost</h2><p class="dim">not counted for this run</p></article>'
        )
    share = aws.get("share_of_llm_cost")
    share_text = f"{percent(share)} of the LLM cost" if share is not None else "no LLM cost to compare with"
    services = [
        (name.replace("_", " "), _field(f"aws.{name}", usd(value), value))
        for name, value in (aws.get("by_service_usd") or {}).items()
        if value
    ]
    return (
        '<article class="tile" id="tile-aws"><h2>AWS cost of the run</h2>'
        f'<p class="big">{_field("aws.cost_usd", usd(aws.get("cost_usd")), aws.get("cost_usd"))}</p>'
        f'<p class="dim">{_field("aws.share_of_llm_cost", share_text, share)}</p><dl>{_rows(services)}</dl></article>'
    )


def _budget_tile(summary: dict) -> str:
    budget = summary.get("budget")
    if not budget:
        return '<article class="tile" id="tile-budget"><h2>Budget</h2><p class="dim">no budget recorded</p></article>'
    job_cap, month_cap = budget.get("job_cap_usd"), budget.get("monthly_cap_usd")
    rows = [
        ("job spent", _field("budget.job_spent_usd", usd(budget.get("job_spent_usd")), budget.get("job_spent_usd"))),
        ("job cap", _field("budget.job_cap_usd", usd(job_cap) if job_cap is not None else "none", job_cap)),
        (
            f"spent in {budget.get('month') or 'the month'}",
            _field("budget.monthly_spent_usd", usd(budget.get("monthly_spent_usd")), budget.get("monthly_spent_usd")),
        ),
        (
            "monthly cap",
            _field("budget.monthly_cap_usd", usd(month_cap) if month_cap is not None else "none", month_cap),
        ),
    ]
    if budget.get("fallback_model_used"):
        rows.append(("fallback model", _field("budget.fallback_model_used", budget["fallback_model_used"])))
    if budget.get("paused"):
        rows.append(("paused", f'<span class="bad">{_field("budget.paused", budget["paused"])}</span>'))
    figures = _rows(rows, wide=("fallback model", "paused"))
    return f'<article class="tile" id="tile-budget"><h2>Budget</h2><dl>{figures}</dl></article>'


def _recovery_tile(summary: dict) -> str:
    recovery = summary.get("recovery") or {}
    names = (("resumes", "resumes"), ("batches_resubmitted", "batches resubmitted"), ("stuck_batches", "stuck batches"))
    rows = [
        (label, _field(f"recovery.{name}", count(recovery.get(name)), recovery.get(name) or 0)) for name, label in names
    ]
    return f'<article class="tile" id="tile-recovery"><h2>Recovery</h2><dl>{_rows(rows)}</dl></article>'


def _figure(chart: str, heading: str, caption: str) -> str:
    return f"<figure><h2>{_e(heading)}</h2>{chart}<figcaption>{_e(caption)}</figcaption></figure>"


def _progress_caption(summary: dict, progress: Sequence[Progress]) -> str:
    start, span, series = progress_series(summary, progress)
    if any(line.start_and_end_only for line in series):
        return (
            "Only the job's start and end are known for the dashed route: no progress was recorded for it, "
            "so the line joins them."
        )
    if start is None:
        return "No time was recorded for this job."
    return (
        f"Each step is a collected batch round (batch) or the outcomes of one second (realtime); from {_clock(start)}."
    )


def _slowest_table(runs: Sequence[BatchRun]) -> str:
    if not runs:
        return ""
    head = (
        "<tr><th>batch</th><th>shard</th><th class=num>round</th><th>model</th><th>created</th><th>ended</th>"
        "<th class=num>duration</th><th class=num>requests</th><th>status</th></tr>"
    )
    rows = "".join(
        f"<tr><td><code>{_e(run.batch_id)}</code></td><td>{_e(run.shard_id)}</td>"
        f"<td class=num>{'' if run.round is None else run.round}</td><td>{_e(run.model or '')}</td>"
        f"<td>{_e(_clock(run.submitted_at))}</td><td>{_e(_clock(run.ended_at))}</td>"
        f"<td class=num>{_e(duration(run.seconds))}</td>"
        f"<td class=num>{'' if run.requests is None else count(run.requests)}</td><td>{_e(run.status)}</td></tr>"
        for run in runs
    )
    return (
        '<section class="panel" id="slowest-batches"><h2>Batches, slowest first</h2>'
        f"<table><thead>{head}</thead><tbody>{rows}</tbody></table></section>"
    )


def _slow_requests_table(requests: Sequence[SlowRequest]) -> str:
    if not requests:
        return ""
    head = (
        "<tr><th class=num>line</th><th>custom_id</th><th>model</th><th>answered</th>"
        "<th class=num>call took</th><th>outcome</th></tr>"
    )
    rows = "".join(
        f"<tr><td class=num>{count(request.line)}</td><td><code>{_e(request.custom_id)}</code></td>"
        f"<td>{_e(request.model or '')}</td><td>{_e(_clock(request.answered_at))}</td>"
        f"<td class=num>{_e(duration(request.seconds))}</td><td>{_e(request.outcome)}</td></tr>"
        for request in requests
    )
    return (
        '<section class="panel" id="slowest-requests"><h2>Requests, slowest first</h2>'
        f"<table><thead>{head}</thead><tbody>{rows}</tbody></table></section>"
    )


def _errors_table(summary: dict) -> str:
    codes = summary.get("error_codes") or {}
    if not codes:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(code)}</code></td><td class=num>{count(lines)}</td></tr>"
        for code, lines in sorted(codes.items(), key=lambda item: (-int(item[1]), str(item[0])))
    )
    return (
        '<section class="panel" id="error-codes"><h2>Errors by code (errors.jsonl)</h2>'
        f"<table><thead><tr><th>code</th><th class=num>lines</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _outputs(outputs: dict[str, str] | None, *, linked: bool = False) -> str:
    """Where the job's files are; `linked` (a copy beside them, on a disk) links each to its file."""
    if not outputs:
        return ""

    def shown(where: str) -> str:
        text = f"<code>{_e(where)}</code>"
        return f'<a href="{_e(PurePosixPath(where).name)}">{text}</a>' if linked else text

    rows = "".join(f"<dt>{_e(name)}</dt><dd>{shown(where)}</dd>" for name, where in outputs.items())
    return f'<section class="panel" id="outputs"><h2>Outputs</h2><dl>{rows}</dl></section>'


def with_local_outputs(page: str, summary: dict, files: dict[str, str]) -> str:
    """The page as copied into a local directory: its outputs are the files beside it, not the bucket's.

    `summary` is the one the page was drawn from; `files` name the local copies (absolute paths).
    """
    drawn = _outputs(summary.get("outputs"))
    local = _outputs(files, linked=True)
    if drawn and drawn in page:
        return page.replace(drawn, local, 1)
    return page.replace("<footer>", f"{local}<footer>", 1)


def render_report(
    summary: dict, shards: Sequence[dict], progress: Sequence[Progress], slow_requests: Sequence[SlowRequest] = ()
) -> str:
    """The whole page, from the job's summary, its shard records, its progress points and, on the
    realtime route, its slowest calls (a batch job shows its slowest batches instead)."""
    runs = slowest_batches(summary, shards, progress)
    if summary.get("route") == ROUTE_REALTIME:
        requests = slowest_requests(slow_requests)
        slowest = _figure(
            slowest_requests_chart(requests),
            "The slowest requests",
            "Time from a request's call to the provider's answer; red: answered with an error.",
        )
        slowest_table = _slow_requests_table(requests)
    else:
        slowest = _figure(
            slowest_chart(runs),
            "The slowest batches",
            "Time from a batch's creation to its collection; red: a batch never collected, timed to the job's end.",
        )
        slowest_table = _slowest_table(runs)
    charts = [
        _figure(progress_chart(summary, progress), "Requests done over time", _progress_caption(summary, progress)),
        _figure(
            spend_chart(summary),
            "Spend against budget",
            "What the job cost at the provider, beside its estimate and the caps that applied to it.",
        ),
        _figure(
            tokens_chart(summary, shards),
            "Tokens",
            "Used tokens as billed, split by route; grey: what planning counted (input) and allowed (output).",
        ),
        slowest,
    ]
    tiles = (
        _requests_tile(summary),
        _tokens_tile(summary, shards),
        _llm_cost_tile(summary),
        _aws_tile(summary),
        _budget_tile(summary),
        _recovery_tile(summary),
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>batchline · {_e(summary.get('job_id', '?'))} · {_e(summary.get('status', ''))}</title>"
        f"<style>{_CSS}</style></head><body><main>"
        f"{_header(summary)}"
        f'<section class="tiles">{"".join(tiles)}</section>'
        f'<section class="charts">{"".join(charts)}</section>'
        f"{slowest_table}{_errors_table(summary)}{_outputs(summary.get('outputs'))}"
        f"<footer>written by batchline when the job finished, {_e(_clock(summary.get('finished_at')))}</footer>"
        "</main></body></html>\n"
    )
