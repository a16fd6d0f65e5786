"""Rich renderables for the CLI: the checkpoint table (from overmem.table) and the advice."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from overmem.summary import Summary
from overmem.table import MARK_LEGEND, table_model
from overmem_tui.theme import PHASE_STYLE


def phase_badge(phase: str | None) -> Text:
    phase = phase or "unknown"
    return Text(f" {phase} ", style=PHASE_STYLE.get(phase, ""))


def phase_table(summary: Summary) -> Table:
    model = table_model(summary)
    table = Table(title=model.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    table.add_column("checkpoint", no_wrap=True, min_width=min(model.name_width, 20), max_width=20,
                     overflow="ellipsis")
    table.add_column("epoch", justify="right", min_width=5, no_wrap=True)
    for col in model.columns:
        table.add_column(col.title.replace(" ", "\n", 1), justify="right", no_wrap=True, min_width=5)
    table.add_column("phase", no_wrap=True, min_width=9)
    for row in model.rows:
        # marks ride with the name: an 80-column terminal has no room for a column of their own
        name = Text(row.name) + Text(f" {row.marks}" if row.marks else "", style="bold")
        table.add_row(name, row.epoch, *row.cells, phase_badge(row.phase), style="bold" if row.recommended else "")
    return table


def advice_text(summary: Summary) -> Group:
    advice = summary.advice
    head = Text("recommended: ", style="bold")
    head.append(advice.recommended or "none", style="bold green" if advice.recommended else "red")
    if advice.merge:
        head.append(f"   merge: {advice.merge[0]} + {advice.merge[1]}", style="bold")
    lines = [head] + [Text(f"  - {reason}") for reason in advice.reasons]
    if summary.forecast:
        lines.append(Text(f"  ~ {summary.forecast.describe()}", style="magenta"))
    lines += [Text(f"  ! {warning}", style="bold yellow") for warning in advice.warnings]
    lines += [Text(f"  ? {problem}", style="dim red") for problem in summary.run.problems[:5]]
    t = advice.thresholds
    lines.append(Text(f"thresholds: {t.describe()}", style="dim"))
    lines.append(Text(MARK_LEGEND, style="dim"))
    return Group(*lines)
