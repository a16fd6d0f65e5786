"""The probe comparison as a Rich table (CLI, watch's probe view, nothing else)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from overmem.probes.compare import ProbeRow


def probe_table(rows: list[ProbeRow], names: list[str], title: str = "probes") -> Table:
    """Values with their 95% bootstrap intervals; green only where the intervals do not overlap."""
    table = Table(title=title, title_justify="left", caption="[low, high]: 95% bootstrap interval over queries; "
                  "green: better, intervals apart", caption_justify="left")
    table.add_column("probe")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("better", overflow="fold")
    for row in rows:
        best = row.best()
        cells = []
        for name in names:
            value = row.values.get(name)
            text = "-" if value is None else f"{value:.4g}"
            if value is not None and name in row.intervals:
                low, high = row.intervals[name]
                text += f" [{low:.3g}, {high:.3g}]"
            cells.append(Text(text, style="bold green" if name == best else ""))
        table.add_row(row.probe, row.metric, *cells, row.better or "")
    return table
