"""Rich renderables for the CLI: the phase table and the advice."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from overmem.summary import Summary
from overmem_tui.theme import MERGE_MARK, ONSET_MARK, PHASE_STYLE, RECOMMENDED_MARK


def fmt_ppl(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def fmt_acc(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def fmt_epoch(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def phase_badge(phase: str | None) -> Text:
    phase = phase or "unknown"
    return Text(f" {phase} ", style=PHASE_STYLE.get(phase, ""))


def marks_for(summary: Summary, name: str) -> str:
    advice = summary.advice
    marks = ""
    if advice.recommended == name:
        marks += RECOMMENDED_MARK
    if advice.merge and name in advice.merge:
        marks += MERGE_MARK
    if advice.phases.onset == name:
        marks += ONSET_MARK
    return marks


def phase_table(summary: Summary) -> Table:
    advice = summary.advice
    agg = {v.ppl_aggregate for row in summary.rows for v in row.splits.values() if v.ppl_aggregate}
    agg_text = "/".join(sorted(agg)) or "mean"
    table = Table(
        title=f"{summary.run.name} · phases on {advice.split or '-'} · ppl = {agg_text} ppl",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("checkpoint", no_wrap=True, max_width=16, overflow="ellipsis")
    table.add_column("epoch", justify="right", min_width=5, no_wrap=True)
    # Only columns that hold a value somewhere: an 80-column terminal has no room to spare.
    columns = [
        (split, kind)
        for split in summary.splits
        for kind in ("ppl", "acc")
        if any(getattr(row.get(split), kind) is not None for row in summary.rows)
    ]
    for split, kind in columns:
        table.add_column(f"{split}\n{'ppl' if kind == 'ppl' else 'acc%'}", justify="right", no_wrap=True, min_width=5)
    table.add_column("phase", no_wrap=True, min_width=9)
    for row in summary.rows:
        verdict = advice.phases.of(row.name)
        marks = marks_for(summary, row.name)
        # marks ride with the name: an 80-column terminal has no room for a column of their own
        cells = [Text(row.name) + Text(f" {marks}" if marks else "", style="bold"), fmt_epoch(row.checkpoint.epoch)]
        for split, kind in columns:
            values = row.get(split)
            cells.append(fmt_ppl(values.ppl) if kind == "ppl" else fmt_acc(values.acc))
        style = "bold" if advice.recommended == row.name else ""
        table.add_row(*cells, phase_badge(verdict.phase.value if verdict else None), style=style)
    return table


def advice_text(summary: Summary) -> Group:
    advice = summary.advice
    lines = []
    head = Text("recommended: ", style="bold")
    head.append(advice.recommended or "none", style="bold green" if advice.recommended else "red")
    if advice.merge:
        head.append(f"   merge: {advice.merge[0]} + {advice.merge[1]}", style="bold")
    lines.append(head)
    for reason in advice.reasons:
        lines.append(Text(f"  - {reason}"))
    for warning in advice.warnings:
        lines.append(Text(f"  ! {warning}", style="bold yellow"))
    for problem in summary.run.problems[:5]:
        lines.append(Text(f"  ? {problem}", style="dim red"))
    t = advice.thresholds
    lines.append(
        Text(
            f"thresholds: ppl factor {t.ppl_factor:g}x and band {t.band:g}x on log-ppl; accuracy "
            f"clearly below best at {t.z:g} SE (or {t.rel_tol:.0%} without n)",
            style="dim",
        )
    )
    lines.append(Text(f"{RECOMMENDED_MARK} recommended  {MERGE_MARK} merge pair  {ONSET_MARK} onset", style="dim"))
    return Group(*lines)
