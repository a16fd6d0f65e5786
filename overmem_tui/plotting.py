"""Character-grid curves with phase-coloured background bands (pure Rich, no Textual).

Prepared series go in, a Rich renderable comes out. The phase of each
checkpoint tints the columns nearest to it, so a glance shows where the curve
turns purple. Kept free of widget state so the TUI, tests and snapshots share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style

from overmem.table import PALETTE
from overmem_tui.theme import PHASE_BAND

SERIES_STYLE = {"train": "#5fd7ff", "val": "#87ff87", "test": "#ffffff"}
SERIES_MARK = {"train": "t", "val": "v", "test": "●"}
FALLBACK_STYLES = ["#ffaf5f", "#ff87d7", "#d7d787", "#87afff"]


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[float, float], ...]  # (x, y) with x ascending
    style: str = ""
    mark: str = "●"


@dataclass(frozen=True)
class Band:
    x: float
    phase: str


@dataclass(frozen=True)
class Plot:
    """Everything needed to draw one panel."""

    title: str
    series: tuple[Series, ...]
    bands: tuple[Band, ...] = ()
    log_y: bool = False
    markers: tuple[tuple[float, str], ...] = ()  # (x, symbol) drawn on the top row
    cursor_x: float | None = None
    y_format: str = "{:.3g}"
    y_range: tuple[float, float] | None = None  # fixed limits; points outside sit on the edge
    extra: dict = field(default_factory=dict)
    forecast: tuple[float, float] | None = None  # x range where the purple phase is expected (shaded axis)


def series_style(name: str, index: int) -> tuple[str, str]:
    if name in SERIES_STYLE:
        return SERIES_STYLE[name], SERIES_MARK[name]
    return FALLBACK_STYLES[index % len(FALLBACK_STYLES)], "◆"


def _scale(values: list[float], log: bool, pad: float = 0.05) -> tuple[float, float]:
    vals = [math.log(v) if log else v for v in values if v is not None and (v > 0 or not log)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        margin = abs(hi) * 0.05 or 0.5
        return lo - margin, hi + margin
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


class PlotRenderable:
    def __init__(self, plot: Plot, height: int | None = None) -> None:
        self.plot = plot
        self.height = height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(20, options.max_width)
        height = max(6, self.height or options.height or 12)
        for line in render_lines(self.plot, width, height):
            yield from line
            yield Segment.line()


def render_lines(plot: Plot, width: int, height: int) -> list[list[Segment]]:
    margin = 8
    plot_w = max(4, width - margin)
    plot_h = max(2, height - 3)  # title, plot rows, axis, labels
    xs = [x for s in plot.series for x, _ in s.points] + [b.x for b in plot.bands]
    ys = [y for s in plot.series for _, y in s.points]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if plot.forecast and xs:  # the axis reaches the expected onset, at most twice as far as the data
        x_hi = max(x_hi, min(plot.forecast[1], x_hi + (x_hi - x_lo)))
    if x_hi - x_lo < 1e-12:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_lo, y_hi = _scale(list(plot.y_range), plot.log_y, pad=0.0) if plot.y_range else _scale(ys, plot.log_y)

    def col(x: float) -> int:
        return min(plot_w - 1, max(0, round((x - x_lo) / (x_hi - x_lo) * (plot_w - 1))))

    def row(y: float) -> int | None:
        if plot.log_y and y <= 0:
            return None
        v = math.log(y) if plot.log_y else y
        if not math.isfinite(v):
            return None
        r = round((y_hi - v) / (y_hi - y_lo) * (plot_h - 1))
        return min(plot_h - 1, max(0, r))

    # background: each column takes the phase of the nearest band point
    bg = [""] * plot_w
    if plot.bands:
        cols = [(col(b.x), b.phase) for b in plot.bands]
        for c in range(plot_w):
            nearest = min(cols, key=lambda item: abs(item[0] - c))
            bg[c] = PHASE_BAND.get(nearest[1], "")
    grid: list[list[tuple[str, str]]] = [[(" ", "") for _ in range(plot_w)] for _ in range(plot_h)]
    for s in plot.series:
        pts = [(col(x), row(y)) for x, y in s.points]
        pts = [(c, r) for c, r in pts if r is not None]
        for (c0, r0), (c1, r1) in zip(pts, pts[1:]):
            steps = max(abs(c1 - c0), abs(r1 - r0))
            for k in range(1, steps):
                c = c0 + round((c1 - c0) * k / steps)
                r = r0 + round((r1 - r0) * k / steps)
                if grid[r][c][0] == " ":
                    grid[r][c] = ("·", s.style)
        for c, r in pts:
            grid[r][c] = (s.mark, f"bold {s.style}")
    lines: list[list[Segment]] = []
    title = plot.title[:width]
    lines.append([Segment(title.ljust(width), Style(bold=True))])
    label_rows = {0: y_hi, plot_h - 1: y_lo, (plot_h - 1) // 2: (y_hi + y_lo) / 2}
    cursor = col(plot.cursor_x) if plot.cursor_x is not None else None
    markers = {col(x): sym for x, sym in plot.markers}
    for r in range(plot_h):
        label = ""
        if r in label_rows:
            value = math.exp(label_rows[r]) if plot.log_y else label_rows[r]
            label = plot.y_format.format(value)
        segs = [Segment(label.rjust(margin - 1)[: margin - 1] + "┤", Style(dim=True))]
        for c in range(plot_w):
            ch, style = grid[r][c]
            if r == 0 and c in markers and ch == " ":
                ch, style = markers[c], "bold #ffd700"
            st = Style.parse(style) if style else Style()
            back = "#444444" if c == cursor and ch == " " else bg[c]
            if back:
                st = st + Style(bgcolor=back)
            segs.append(Segment(ch, st))
        lines.append(segs)
    axis = [Segment(" " * (margin - 1) + "└", Style(dim=True))]
    ahead = range(col(plot.forecast[0]), col(plot.forecast[1]) + 1) if plot.forecast else range(0)
    for c in range(plot_w):
        axis.append(Segment("━", Style(color=PALETTE["purple"], bold=True)) if c in ahead
                    else Segment("─", Style(dim=True)))
    lines.append(axis)
    left, right = f"{x_lo:.4g}", f"{x_hi:.4g}"
    xlabel = plot.extra.get("x_label", "epoch")
    mid = f" {xlabel} "
    label_line = " " * margin + left
    gap = width - len(label_line) - len(right)
    if gap > len(mid):
        label_line += mid.center(gap)
    else:
        label_line += " " * max(1, gap)
    label_line += right
    lines.append([Segment(label_line[:width].ljust(width), Style(dim=True))])
    return lines
