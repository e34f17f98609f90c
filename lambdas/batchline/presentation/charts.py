"""The report's SVG charts, drawn by hand: inline in the page, no script and no font needed."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from batchline.presentation.figures import (
    ROUTE_BATCH,
    ROUTE_REALTIME,
    ROUTES,
    SLOWEST_LIMIT,
    BatchRun,
    Progress,
    SlowRequest,
    progress_series,
    tokens_by_route,
)
from batchline.presentation.numbers import count, usd
from batchline.presentation.text import clock, duration, escape

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

_WIDTH = 760


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
        f'<title id="{chart_id}-title">{escape(title)}</title><desc id="{chart_id}-desc">{escape(desc)}</desc>'
    )


def _text(x: float, y: float, content: str, *, cls: str = "", anchor: str = "start") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{escape(content)}</text>'


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
    desc = f"Cumulative requests with a final outcome over {duration(span)} since {clock(start)}: {finals}."
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
                    f'height="{_BAR_H}" fill="{colour}"><title>{escape(tooltip)}</title></rect>'
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
