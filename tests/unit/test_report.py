"""report.html as a reader sees it: the summary's figures, four charts, and hostile text kept as text."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from batchline.domain.layout import JobLayout
from batchline.presentation.charts import (
    CHART_IDS,
    CHART_PROGRESS,
    CHART_SLOWEST,
    CHART_SPEND,
    CHART_TOKENS,
    time_ticks,
)
from batchline.presentation.figures import Progress, SlowRequest, progress_series, slowest_batches, tokens_by_route
from batchline.presentation.numbers import usd
from batchline.presentation.report import render_report, report_key, with_local_outputs
from batchline.presentation.text import duration
from report_samples import HOSTILE, JOB_ID, sample_progress, sample_shards, sample_summary

SVG = "{http://www.w3.org/2000/svg}"


class _Page(HTMLParser):
    """The page's tags, and the text and data-value of every element marked with data-field."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.fields: dict[str, tuple[str, str | None]] = {}
        self._open: list[tuple[str, str | None, list[str]]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if "data-field" in attributes:
            self._open.append((attributes["data-field"], attributes.get("data-value"), []))

    def handle_data(self, data):
        for _, _, texts in self._open:
            texts.append(data)

    def handle_endtag(self, tag):
        if tag == "span" and self._open:
            name, value, texts = self._open.pop()
            self.fields[name] = ("".join(texts), value)


def charts(page: str) -> dict[str, ET.Element]:
    """Each inline SVG, parsed as XML: a chart that is not well-formed fails here."""
    found = {}
    for markup in re.findall(r"<svg\b.*?</svg>", page, flags=re.S):
        element = ET.fromstring(markup)
        found[element.get("id")] = element
    return found


@pytest.fixture
def page() -> str:
    return render_report(sample_summary(), sample_shards(), sample_progress())


def test_the_header_shows_the_summarys_own_figures(page):
    summary, fields = sample_summary(), _Page(page).fields
    assert fields["job_id"][0] == JOB_ID
    assert fields["status"][0] == "completed_with_errors"
    assert fields["message"][0] == summary["message"]  # hostile text shown as the text it is
    for name in ("input_lines", "succeeded", "failed", "invalid", "input_tokens", "output_tokens"):
        assert fields[name] == (f"{summary[name]:,}", str(summary[name])), name
    for name in ("cost_usd", "cost_usd_if_realtime", "estimated_cost_usd"):
        assert fields[name] == (usd(summary[name]), str(summary[name])), name
    assert fields["aws.cost_usd"] == ("$0.0011", "0.00107698")  # the one number format (presentation/numbers)
    assert fields["aws.share_of_llm_cost"] == ("10.0% of the LLM cost", "0.100036")
    assert fields["aws.dynamodb"] == ("<$0.0001", "2.588e-05")  # too small for four decimals: never "$0.0000"
    assert "aws.sqs" not in fields  # services that cost nothing are left out
    budget = summary["budget"]
    for name in ("job_cap_usd", "job_spent_usd", "monthly_cap_usd", "monthly_spent_usd"):
        assert fields[f"budget.{name}"] == (usd(budget[name]), str(budget[name])), name
    assert fields["budget.fallback_model_used"][0] == budget["fallback_model_used"]
    for name, value in summary["recovery"].items():
        assert fields[f"recovery.{name}"] == (str(value), str(value)), name


def test_hostile_text_from_users_and_providers_stays_inert(page):
    # The message, an error code, a model, a batch id and the fallback model all carry a script tag.
    assert "<script" not in page.lower()
    assert "script" not in _Page(page).tags
    assert page.count("&lt;script&gt;window.__pwned = 1&lt;/script&gt;") >= 5
    # And the page tells the browser to run no script and fetch nothing, whatever it holds.
    assert "default-src 'none'" in page and "script-src" not in page


def test_the_page_is_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page and "@font-face" not in page


def test_there_are_four_well_formed_charts_each_with_a_title_and_something_drawn(page):
    found = charts(page)
    assert set(found) == set(CHART_IDS)
    for chart_id, svg in found.items():
        assert svg.get("class") == "chart" and svg.get("role") == "img"
        title = svg.find(f"{SVG}title")
        assert title is not None and title.text and title.get("id") == f"{chart_id}-title"
        assert f"{chart_id}-title" in svg.get("aria-labelledby")
        marks = svg.findall(f".//{SVG}rect") + svg.findall(f".//{SVG}path")
        assert marks, chart_id


def test_the_progress_chart_draws_one_cumulative_line_per_route(page):
    start, span, series = progress_series(sample_summary(), sample_progress())
    assert span == 3600.0 and start.isoformat() == "2026-11-23T07:00:00+00:00"
    lines = {line.route: line for line in series}
    assert set(lines) == {"batch", "realtime"}
    assert [done for _, done in lines["batch"].points] == [0, 730, 1030, 1076, 1076]
    assert lines["realtime"].points[-1] == (3600.0, 8)
    assert not any(line.start_and_end_only for line in series)
    paths = charts(page)[CHART_PROGRESS].findall(f".//{SVG}path")
    assert sorted(path.get("class") for path in paths) == ["series route-batch", "series route-realtime"]


def test_with_no_progress_recorded_the_jobs_route_is_drawn_from_its_start_to_its_end():
    summary = sample_summary()
    _, _, series = progress_series(summary, [])
    assert len(series) == 1
    assert series[0].route == "batch" and series[0].start_and_end_only
    assert series[0].points == [(0.0, 0), (3600.0, summary["succeeded"] + summary["failed"])]
    svg = charts(render_report(summary, sample_shards(), []))[CHART_PROGRESS]
    assert [path.get("class") for path in svg.findall(f".//{SVG}path")] == ["series estimated route-batch"]


def test_the_slowest_batches_come_first_and_a_batch_never_collected_counts_until_the_job_ended():
    runs = slowest_batches(sample_summary(), sample_shards(), sample_progress())
    assert [(run.batch_id, run.seconds) for run in runs] == [
        (f"batch_{HOSTILE}", timedelta(minutes=58).total_seconds()),
        ("batch_b0", 23 * 60.0),
        ("batch_a0", 20 * 60.0),
        ("batch_b1", 10 * 60.0),  # known from its progress point and from the shard: listed once
    ]
    assert [run.collected for run in runs] == [False, True, True, True]
    assert [(run.shard_id, run.round, run.requests) for run in runs[1:]] == [
        ("00001", 0, 354),
        ("00000", 0, 730),
        ("00001", 1, 54),
    ]


def test_the_slowest_batches_chart_labels_each_bar(page):
    svg = charts(page)[CHART_SLOWEST]
    labels = [text.text for text in svg.iter(f"{SVG}text") if text.get("class") == "bar-label"]
    assert labels == [
        "shard 00002 · round 0",
        "shard 00001 · round 0",
        "shard 00000 · round 0",
        "shard 00001 · round 1",
    ]
    values = [text.text for text in svg.iter(f"{SVG}text") if text.get("class") == "bar-value"]
    assert values[0] == "58 min · 116 requests" and values[1] == "23 min · 354 requests"


def test_the_spend_chart_sets_spend_against_the_estimate_and_both_caps(page):
    svg = charts(page)[CHART_SPEND]
    texts = [text.text for text in svg.iter(f"{SVG}text")]
    assert {"$0.0108", "$0.0130", "$0.0215", "$0.0310"} <= set(texts)  # spent, estimate, realtime, month
    assert "job cap $0.0200" in texts and "monthly cap $0.0500" in texts
    assert len(svg.findall(f".//{SVG}line[@class='marker']")) == 2


def test_tokens_are_split_by_route_and_shown_beside_what_planning_counted(page):
    assert tokens_by_route(sample_summary(), sample_shards()) == {"batch": (110000, 7000), "realtime": (10551, 782)}
    texts = [text.text for text in charts(page)[CHART_TOKENS].iter(f"{SVG}text")]
    # Used input and output; what planning counted (the same prompt tokens here) and the output caps.
    assert {"120,551", "7,782", "15,120"} <= set(texts)


def test_a_job_that_never_planned_still_gets_a_page():
    summary = {
        "job_id": "gone-missing",
        "status": "failed",
        "message": "InputNotFoundError: s3://input-files/gone.jsonl does not exist",
        "route": None,
        "input_lines": 0,
        "succeeded": 0,
        "failed": 0,
        "invalid": 0,
        "shards": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "cost_usd_if_realtime": 0.0,
        "estimated_cost_usd": 0.0,
        "estimated_cost_usd_if_realtime": 0.0,
        "error_codes": {},
        "started_at": None,
        "finished_at": "2026-11-23T08:00:00.000+00:00",
    }
    page = render_report(summary, [], [])
    assert _Page(page).fields["message"][0] == summary["message"]
    found = charts(page)
    assert set(found) == set(CHART_IDS)
    assert "nothing to plot" in ET.tostring(found[CHART_PROGRESS], encoding="unicode")


def test_stored_progress_items_become_points_and_the_report_sits_next_to_the_summary():
    item = {"pk": "JOB#j", "sk": "PROGRESS#00001#0", "at": "2026-11-23T07:00:00+00:00", "route": "batch", "done": 4}
    assert Progress.from_item(item) == Progress(at="2026-11-23T07:00:00+00:00", route="batch", done=4)
    assert report_key(JobLayout("j", "jobs")) == "jobs/j/report.html"


def test_times_read_in_the_unit_a_reader_counts_in():
    assert [label for _, label in time_ticks(4.7)] == ["0", "1 s", "2 s", "3 s", "4 s"]
    assert [label for _, label in time_ticks(30 * 3600)] == ["0", "6 h", "12 h", "18 h", "24 h", "30 h"]
    assert time_ticks(40 * 86400)[-1] == (40 * 86400, "40 d")
    assert [duration(s) for s in (0.25, 2.13, 42, 600, 754, 3 * 3600 + 5 * 60)] == [
        "250 ms",
        "2.1 s",
        "42 s",
        "10 min",
        "12 min 34 s",
        "3 h 05 min",
    ]


def _bars(svg: ET.Element) -> list[tuple[float, float, str]]:
    return [(float(r.get("x")), float(r.get("width")), r.get("fill")) for r in svg.iter(f"{SVG}rect")]


def test_the_spend_chart_draws_the_job_and_the_month_on_one_dollar_scale(page):
    svg = charts(page)[CHART_SPEND]
    bars = _bars(svg)
    job_spent = bars[0]  # "spent, at batch price" in the job's panel
    month_job_share = next(bar for bar in bars[1:] if bar[2] == job_spent[2])  # the job's part of the month
    assert month_job_share[1] == pytest.approx(job_spent[1])  # the same dollars, the same length
    markers = {line.get("x1") for line in svg.iter(f"{SVG}line") if line.get("class") == "marker"}
    job_cap_x, month_cap_x = sorted(float(x) for x in markers)
    left = job_spent[0]
    assert (month_cap_x - left) == pytest.approx(2.5 * (job_cap_x - left))  # $0.05 is 2.5 times $0.02
    texts = [text.text for text in svg.iter(f"{SVG}text")]
    assert "one dollar scale for every group: this job, this month (2026-11)" in texts
    ticks = [text.text for text in svg.iter(f"{SVG}text") if "scale-tick" in (text.get("class") or "")]
    assert ticks[0] == "$0" and ticks[-1] == "$0.0600"  # past the monthly cap, the largest figure


def _realtime_requests() -> list[SlowRequest]:
    return [
        SlowRequest(line, f"req-{line}", "gpt-4o-mini", seconds, "2026-11-23T07:10:00+00:00", outcome)
        for line, seconds, outcome in [(1, 0.42, "succeeded"), (2, 12.5, "succeeded"), (3, 3.2, "rate_limited")]
        + [(10 + i, 0.1 + i / 100, "succeeded") for i in range(20)]
    ]


def test_a_realtime_run_shows_its_slowest_requests_instead_of_batches():
    summary = {**sample_summary(), "route": "realtime"}
    page = render_report(summary, [], sample_progress(), _realtime_requests())

    svg = charts(page)[CHART_SLOWEST]
    labels = [text.text for text in svg.iter(f"{SVG}text") if text.get("class") == "bar-label"]
    assert labels[:3] == ["line 2 · req-2", "line 3 · req-3", "line 1 · req-1"] and len(labels) == 10
    values = [text.text for text in svg.iter(f"{SVG}text") if text.get("class") == "bar-value"]
    assert values[:3] == ["12 s", "3.2 s · rate_limited", "420 ms"]
    table = re.search(r'<section class="panel" id="slowest-requests">.*?</section>', page, flags=re.S).group(0)
    assert table.count("<tr>") == 11  # the heading and the ten slowest
    assert "<code>req-2</code>" in table and "12 s" in table
    assert 'id="slowest-batches"' not in page and "No batch was created" not in page


def test_a_batch_run_keeps_its_slowest_batches():
    page = render_report(sample_summary(), sample_shards(), sample_progress(), _realtime_requests())
    assert 'id="slowest-batches"' in page and 'id="slowest-requests"' not in page


def test_a_copy_on_disk_lists_the_local_files_beside_it_and_links_them(page):
    files = {name: f"/home/me/out/{name}.jsonl" for name in ("results", "errors")}
    local = with_local_outputs(page, sample_summary(), files)
    outputs = re.search(r'<section class="panel" id="outputs">.*?</section>', local, flags=re.S).group(0)
    assert "s3://" not in outputs
    assert '<a href="results.jsonl"><code>/home/me/out/results.jsonl</code></a>' in outputs
    assert local.replace(outputs, "") == page.replace(
        re.search(r'<section class="panel" id="outputs">.*?</section>', page, flags=re.S).group(0), ""
    )  # nothing else changed
