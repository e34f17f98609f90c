"""report.html opened in headless Chromium: every chart is laid out, painted in its colours, and nothing else runs.

The check asks the browser itself: where each chart and its marks (bars, lines, cap markers) are
laid out, and which colours a screenshot of the marks holds. An empty chart, an unreadable path
or broken markup leaves no painted mark, and the same check is shown to catch each of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from batchline.presentation.charts import (
    CAP_COLOUR,
    CHART_IDS,
    CHART_PROGRESS,
    CHART_SLOWEST,
    CHART_SPEND,
    CHART_TOKENS,
    ESTIMATE_COLOUR,
    ROUTE_COLOURS,
    SPENT_COLOUR,
    UNFINISHED_COLOUR,
)
from batchline.presentation.report import render_report
from report_samples import JOB_ID, sample_progress, sample_shards, sample_summary

from .chromium import Chromium, find_chromium

# The colours each chart must paint with the sample job: both routes, caps, a batch never collected.
CHART_COLOURS = {
    CHART_PROGRESS: (ROUTE_COLOURS["batch"], ROUTE_COLOURS["realtime"]),
    CHART_SPEND: (SPENT_COLOUR, ESTIMATE_COLOUR, CAP_COLOUR),
    CHART_TOKENS: (ROUTE_COLOURS["batch"], ROUTE_COLOURS["realtime"], ESTIMATE_COLOUR),
    CHART_SLOWEST: (ROUTE_COLOURS["batch"], UNFINISHED_COLOUR),
}
MIN_PIXELS = 40  # of each colour, inside the marks' own box (legends are outside it)

# Where each chart and its marks are, measured by the layout engine (the test's script, not the page's).
_LAYOUT = """
JSON.stringify([...document.querySelectorAll('svg.chart')].map(svg => {
  const box = r => ({x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height});
  const marks = [...svg.querySelectorAll('.bar, .series, .marker')]
    .map(m => m.getBoundingClientRect()).filter(r => r.width > 0 || r.height > 0);
  const union = marks.length ? {
    left: Math.min(...marks.map(r => r.left)), top: Math.min(...marks.map(r => r.top)),
    right: Math.max(...marks.map(r => r.right)), bottom: Math.max(...marks.map(r => r.bottom))} : null;
  return {
    id: svg.id,
    svg_namespace: svg.namespaceURI === 'http://www.w3.org/2000/svg',
    title: (svg.querySelector(':scope > title') || {}).textContent || '',
    box: box(svg.getBoundingClientRect()),
    marks: marks.length,
    marks_box: union && box({left: union.left, top: union.top,
                             width: union.right - union.left, height: union.bottom - union.top}),
  };
}))
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        why = "no Chromium found (make test installs Debian's chromium with apt-get; or set BATCHLINE_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(why)  # on CI the browser check must run, not quietly skip
        pytest.skip(why)
    with Chromium(binary) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def report_page() -> str:
    return render_report(sample_summary(), sample_shards(), sample_progress())


def chart_problems(browser: Chromium, path: Path) -> dict[str, list[str]]:
    """What is wrong with each chart of the page at `path`, as the browser draws it; {} when nothing."""
    browser.open(path)
    layout = {chart["id"]: chart for chart in json.loads(browser.evaluate(_LAYOUT))}
    problems: dict[str, list[str]] = {}
    for chart_id in CHART_IDS:
        chart = layout.get(chart_id)
        if chart is None:
            problems[chart_id] = ["not in the page"]
            continue
        found = []
        if not chart["svg_namespace"]:
            found.append("not parsed as SVG")
        if not chart["title"].strip():
            found.append("no title")
        if chart["box"]["width"] < 400 or chart["box"]["height"] < 50:
            found.append(f"laid out at {chart['box']['width']:.0f}x{chart['box']['height']:.0f}")
        marks = chart["marks_box"]
        if not chart["marks"] or marks is None or marks["width"] < 5 or marks["height"] < 5:
            found.append("no mark laid out")
        else:
            pixels = browser.screenshot(**marks)
            for colour in CHART_COLOURS[chart_id]:
                if (seen := pixels.count(colour)) < MIN_PIXELS:
                    found.append(f"{colour}: {seen} pixels painted")
        if found:
            problems[chart_id] = found
    return problems


def test_every_chart_renders_in_chromium(browser, report_page, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(report_page)

    assert chart_problems(browser, path) == {}
    assert browser.evaluate("document.title").startswith(f"batchline · {JOB_ID}")
    assert browser.page_errors() == []


def test_the_page_loads_nothing_else_and_runs_no_script(browser, report_page, tmp_path):
    # The sample's message, model, batch id and error code each hold a <script> tag.
    path = tmp_path / "report.html"
    path.write_text(report_page)
    browser.open(path)

    assert browser.evaluate("document.scripts.length") == 0
    assert browser.evaluate("typeof window.__pwned") == "undefined"
    assert "<script>window.__pwned" in browser.evaluate("document.body.innerText")  # shown as text
    assert browser.requested_urls() == [path.resolve().as_uri()]


def _empty(page: str, chart_id: str) -> str:
    return re.sub(rf'(<svg id="{chart_id}"[^>]*>.*?</desc>).*?</svg>', r"\1</svg>", page, count=1, flags=re.S)


def _unreadable_path(page: str, chart_id: str) -> str:
    svg = re.search(rf'<svg id="{chart_id}".*?</svg>', page, flags=re.S).group(0)
    return page.replace(svg, svg.replace(' d="M', ' d="Z!'))


def _broken_markup(page: str, chart_id: str) -> str:
    svg = re.search(rf'<svg id="{chart_id}".*?</svg>', page, flags=re.S).group(0)
    return page.replace(svg, svg.replace('<rect class="bar" x=', '<rect class="bar" x=<', 1).replace('"/>', '"', 3))


@pytest.mark.parametrize(
    ("sabotage", "chart_id"),
    [(_empty, CHART_TOKENS), (_unreadable_path, CHART_PROGRESS), (_broken_markup, CHART_SPEND)],
    ids=["empty svg", "path data the browser cannot read", "broken markup"],
)
def test_the_check_catches_a_broken_chart(browser, report_page, tmp_path, sabotage, chart_id):
    path = tmp_path / "report.html"
    path.write_text(sabotage(report_page, chart_id))

    problems = chart_problems(browser, path)

    assert chart_id in problems, problems
