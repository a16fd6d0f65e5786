"""The report figure on the golden run (fast; the demo test covers a real run)."""

from __future__ import annotations

import shutil
import struct
from html.parser import HTMLParser

from overmem.report import _ppl_limits, figure_bytes, html_report, markdown, write_report
from overmem.rundir import load_run
from overmem.summary import summarize
from tests.conftest import DATA


def test_epoch_zero_far_above_the_trained_curve_is_left_off_the_scale():
    low, high = _ppl_limits([3.13, 1.21, 1.15, 1.17, 1.35])
    assert low < 1.15 and 1.35 < high < 1.4  # the rise from 1.15 to 1.35 fills the panel
    low, high = _ppl_limits([9.0, 3.6, 3.2, 3.1, 14.0])
    assert high > 14.0 and low < 3.1  # nothing is far above a large rise: all shown
    assert _ppl_limits([2.0]) == (1.9, 2.1)


def test_figure_has_one_panel_per_split_at_the_documented_size():
    data = figure_bytes(summarize(load_run(DATA / "paper_run")))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1000, 960)


class _Tags(HTMLParser):
    """Every opened table/list/emphasis tag, checked to close in order; the cells per row."""

    TRACKED = {"table", "thead", "tbody", "tr", "th", "td", "ul", "li", "strong", "code"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.rows, self.headers = [], [], [], []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.TRACKED:
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag not in self.TRACKED:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("th", "td"):
            self.rows[-1].append("".join(self._cell).strip())
            if tag == "th":
                self.headers.append(self.rows[-1][-1])
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parsed(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    tags.close()
    return tags


def test_html_report_is_well_formed_html_of_the_markdown():
    summary = summarize(load_run(DATA / "paper_run"))
    page = html_report(summary)
    tags = _parsed(page)
    assert tags.errors == [] and tags.stack == []
    assert page.count("<table>") == 1 and page.count("<ul>") == 1
    assert "**" not in page and "`" not in page
    assert "<strong>warning</strong>" in page and "<code>meta-llama/Llama-3.1-8B</code>" in page
    # the Markdown table's header row as <th>, each of its rows as <td> cells with the same values
    md_rows = [[c.strip() for c in line.strip()[1:-1].split("|")] for line in markdown(summary).splitlines()
               if line.startswith("| ")]
    assert tags.headers == md_rows[0][:9] and tags.headers[:3] == ["checkpoint", "epoch", "train ppl"]
    assert tags.rows == md_rows and len(tags.rows) == 12
    assert ["ep5", "5", "1.2", "3.9", "75.5", "3.6", "75.6", "yellow", "★⊕"] in tags.rows
    assert page.startswith("<!doctype html>") and "<h1>overmem report: paper_run</h1>" in page
    assert "<img src=\"data:image/png;base64,iVBORw0KGgo" in page  # the figure, inlined


def test_html_report_escapes_html_read_from_the_run(tmp_path):
    run = tmp_path / "run <em>bold<em>"  # a directory name is the run's name in the report
    shutil.copytree(DATA / "paper_run", run)
    page = html_report(summarize(load_run(run)))
    assert "<em>" not in page and "<h1>overmem report: run &lt;em&gt;bold&lt;em&gt;</h1>" in page
    assert _parsed(page).errors == []


def test_an_html_report_replaces_its_earlier_self(tmp_path):
    summary = summarize(load_run(DATA / "paper_run"))
    out = tmp_path / "report.html"
    assert write_report(summary, out) == [out]
    assert write_report(summary, out) == [out]  # signed: the second report may replace the first
