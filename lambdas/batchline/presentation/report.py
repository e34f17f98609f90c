"""report.html: one page about a finished job, for the person who ran it.

Pure: the summary, the shard records and the progress points in, one HTML string out. The page
holds its CSS and its SVG charts inline and nothing else (no script, no font, no fetch; its
Content-Security-Policy forbids them), so it opens the same from S3, a mail or a laptop's disk.
Every text that came from a user or a provider (job id, message, model, batch id, error code) is
escaped, so a request named ``<script>`` stays text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from batchline.domain.layout import JobLayout
from batchline.presentation.charts import (
    progress_chart,
    slowest_chart,
    slowest_requests_chart,
    spend_chart,
    tokens_chart,
)
from batchline.presentation.figures import (
    ROUTE_REALTIME,
    BatchRun,
    Progress,
    SlowRequest,
    progress_series,
    slowest_batches,
    slowest_requests,
)
from batchline.presentation.numbers import count, percent, usd
from batchline.presentation.text import clock, duration, escape, moment_of

REPORT_FILE = "report.html"
_STATUS_CLASSES = {"succeeded", "completed_with_errors", "failed", "paused"}


def report_key(layout: JobLayout) -> str:
    """Where the report lives: next to summary.json."""
    return str(PurePosixPath(layout.summary).with_name(REPORT_FILE))


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
    raw = f' data-value="{escape(value)}"' if value is not None else ""
    return f'<span data-field="{escape(name)}"{raw}>{escape(shown)}</span>'


def _rows(rows: Iterable[tuple[str, str]], *, wide: tuple[str, ...] = ()) -> str:
    """A term and its figure on one line; the terms in `wide` (free text) on two, full width."""
    return "".join(
        f"<dt{' class=wide' if term in wide else ''}>{escape(term)}</dt>"
        f"<dd{' class=wide' if term in wide else ''}>{definition}</dd>"
        for term, definition in rows
    )


def _header(summary: dict) -> str:
    status = str(summary.get("status") or "unknown")
    status_class = status if status in _STATUS_CLASSES else "other"
    started, finished = moment_of(summary.get("started_at")), moment_of(summary.get("finished_at"))
    took = f" · took {duration((finished - started).total_seconds())}" if started and finished else ""
    route = summary.get("route") or "none"
    return (
        '<header><p class="eyebrow">batchline job report</p>'
        f"<h1>{_field('job_id', summary.get('job_id', '?'))} "
        f'<span class="status status-{status_class}" data-field="status">{escape(status)}</span></h1>'
        f'<p class="message">{_field("message", summary.get("message") or "")}</p>'
        f'<p class="meta">route {_field("route", route)} · {count(summary.get("shards"))} shards · started '
        f"{escape(clock(summary.get('started_at')))} · finished "
        f"{escape(clock(summary.get('finished_at')))}{escape(took)}</p>"
        "</header>"
    )


_REUSED = (("from the cache", "cached"), ("repeats in the file", "duplicates"))


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
    # Succeeded without a request this run: answered before (the answer cache), or repeating an earlier line.
    reused = [(label, name, int(summary.get(name) or 0)) for label, name in _REUSED]
    rows += _rows((label, _field(name, count(n), n)) for label, name, n in reused if n)
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
        rows.append(("input, counted when planned", escape(count(planned))))
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
            rows.append(("saved", f'<b class="ok">{escape(usd(if_realtime - cost))}</b>'))
    cache_saved = summary.get("cache_saved_usd") or 0.0
    if summary.get("cached") or summary.get("duplicates"):
        rows.append(
            ("saved by the cache", f'<b class="ok">{_field("cache_saved_usd", usd(cache_saved), cache_saved)}</b>')
        )
    estimate_name = "estimated_cost_usd_if_realtime" if realtime else "estimated_cost_usd"
    estimate = summary.get(estimate_name) or 0.0
    rows.append(("estimated before the run", _field(estimate_name, usd(estimate), estimate)))
    return (
        f'<article class="tile" id="tile-llm-cost"><h2>LLM cost</h2><p class="big">{escape(usd(cost))}</p>'
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
    if recovery.get("schema_retries"):  # only a job whose requests asked for a JSON Schema has any
        names += (("schema_retries", "answers asked again for failing their schema"),)
    rows = [
        (label, _field(f"recovery.{name}", count(recovery.get(name)), recovery.get(name) or 0)) for name, label in names
    ]
    return f'<article class="tile" id="tile-recovery"><h2>Recovery</h2><dl>{_rows(rows)}</dl></article>'


def _figure(chart: str, heading: str, caption: str) -> str:
    return f"<figure><h2>{escape(heading)}</h2>{chart}<figcaption>{escape(caption)}</figcaption></figure>"


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
        f"Each step is a collected batch round (batch) or the outcomes of one second (realtime); from {clock(start)}."
    )


def _slowest_table(runs: Sequence[BatchRun]) -> str:
    if not runs:
        return ""
    head = (
        "<tr><th>batch</th><th>shard</th><th class=num>round</th><th>model</th><th>created</th><th>ended</th>"
        "<th class=num>duration</th><th class=num>requests</th><th>status</th></tr>"
    )
    rows = "".join(
        f"<tr><td><code>{escape(run.batch_id)}</code></td><td>{escape(run.shard_id)}</td>"
        f"<td class=num>{'' if run.round is None else run.round}</td><td>{escape(run.model or '')}</td>"
        f"<td>{escape(clock(run.submitted_at))}</td><td>{escape(clock(run.ended_at))}</td>"
        f"<td class=num>{escape(duration(run.seconds))}</td>"
        f"<td class=num>{'' if run.requests is None else count(run.requests)}</td><td>{escape(run.status)}</td></tr>"
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
        f"<tr><td class=num>{count(request.line)}</td><td><code>{escape(request.custom_id)}</code></td>"
        f"<td>{escape(request.model or '')}</td><td>{escape(clock(request.answered_at))}</td>"
        f"<td class=num>{escape(duration(request.seconds))}</td><td>{escape(request.outcome)}</td></tr>"
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
        f"<tr><td><code>{escape(code)}</code></td><td class=num>{count(lines)}</td></tr>"
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
        text = f"<code>{escape(where)}</code>"
        return f'<a href="{escape(PurePosixPath(where).name)}">{text}</a>' if linked else text

    rows = "".join(f"<dt>{escape(name)}</dt><dd>{shown(where)}</dd>" for name, where in outputs.items())
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
        f"<title>batchline · {escape(summary.get('job_id', '?'))} · {escape(summary.get('status', ''))}</title>"
        f"<style>{_CSS}</style></head><body><main>"
        f"{_header(summary)}"
        f'<section class="tiles">{"".join(tiles)}</section>'
        f'<section class="charts">{"".join(charts)}</section>'
        f"{slowest_table}{_errors_table(summary)}{_outputs(summary.get('outputs'))}"
        f"<footer>written by batchline when the job finished, {escape(clock(summary.get('finished_at')))}</footer>"
        "</main></body></html>\n"
    )
