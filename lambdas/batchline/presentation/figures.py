"""The figures report.html draws: what the workflow records (progress points, timed calls), and the
series the charts are drawn from, computed from the summary and the shard records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from batchline.presentation.text import moment_of

ROUTE_BATCH, ROUTE_REALTIME = "batch", "realtime"
ROUTES = (ROUTE_BATCH, ROUTE_REALTIME)
SLOWEST_LIMIT = 10


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


def progress_series(summary: dict, progress: Sequence[Progress]) -> tuple[datetime | None, float, list[RouteSeries]]:
    """(start, span in seconds, one cumulative series per route) of the requests done over time.

    The route the job took gets a straight line from start to end when nothing was recorded for
    it (a job run before progress was recorded), so the chart never claims that nothing was done.
    """
    timed = [(moment, point) for point in progress if (moment := moment_of(point.at)) is not None and point.done > 0]
    ends = [moment_of(summary.get("started_at")), moment_of(summary.get("finished_at"))]
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
        began, ended = moment_of(submitted_at), moment_of(ended_at)
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
