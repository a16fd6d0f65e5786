"""The checkpoint table of a run, as data: columns, rows, formatted cells, phase, marks.

One pure model from a Summary; the Rich table (CLI), the Textual DataTable (watch)
and the Markdown table (report) only render it. The phase palette and the marks
live here too, so every view colours and marks a checkpoint the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from overmem.rundir.lines import TRAINER_METRIC
from overmem.summary import Summary
from overmem.units import fmt_pct
from overmem.values import CheckpointValues, trainer_values, x_of

# One palette: figures use the colours, the terminal themes derive from them.
PALETTE = {"black": "#303030", "yellow": "#e8c547", "purple": "#7b3fb8", "overfit": "#b03a2e", "unknown": "#9a9a9a"}
RECOMMENDED_MARK, MERGE_MARK, ONSET_MARK = "★", "⊕", "!"
MARK_LEGEND = f"{RECOMMENDED_MARK} recommended  {MERGE_MARK} merge pair  {ONSET_MARK} onset"
SORTS = ("epoch", "ppl", "acc", "phase")
_PHASE_ORDER = {"yellow": 0, "purple": 1, "overfit": 2, "black": 3, "unknown": 4}


def fmt_ppl(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def fmt_epoch(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def trajectory_rows(summary: Summary) -> list[CheckpointValues]:
    """The rows drawn on the trajectory's x axis: base and trained checkpoints with an epoch or step."""
    return [r for r in summary.rows if r.checkpoint.on_trajectory and x_of(r) is not None]


def merge_lines(summary: Summary, merge: str, against: list[str], label: str = "") -> list[str]:
    """A merge's numbers beside those of the checkpoints it is compared with (each named after
    ``label``), on the test split and on the driving split (one line each)."""
    by_name = {r.name: r for r in summary.rows}
    if merge not in by_name:
        return []
    lines = []
    for split in dict.fromkeys(s for s in ("test", summary.split) if s in summary.splits):
        v = by_name[merge].get(split)
        others = " · ".join(f"{label}{name}: ppl {fmt_ppl(by_name[name].get(split).ppl)}, "
                            f"acc {fmt_pct(by_name[name].get(split).acc)}%" for name in against if name in by_name)
        lines.append(f"{merge} on {split}: ppl {fmt_ppl(v.ppl)}, acc {fmt_pct(v.acc)}%"
                     + (f" ({others})" if others else ""))
    return lines


def phase_of(summary: Summary, name: str) -> str:
    verdict = summary.advice.phases.of(name)
    return verdict.phase.value if verdict else "unknown"


def marks_for(summary: Summary, name: str) -> str:
    advice = summary.advice
    return ((RECOMMENDED_MARK if advice.recommended == name else "")
            + (MERGE_MARK if advice.merge and name in advice.merge else "")
            + (ONSET_MARK if advice.phases.onset == name else ""))


@dataclass(frozen=True)
class Column:
    key: str  # "<split>-ppl", "<split>-acc", "<split>-n", "<split>-trainer/<metric>"
    title: str
    split: str
    metric: str  # ppl | acc | n (rows the accuracy counts) | trainer/<name>


@dataclass(frozen=True)
class TableRow:
    name: str
    epoch: str
    phase: str
    marks: str
    cells: tuple[str, ...]  # one per column
    recommended: bool
    marked: bool = False


@dataclass(frozen=True)
class TableModel:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[TableRow, ...]
    name_width: int


def columns_of(summary: Summary, trainer: dict) -> tuple[Column, ...]:
    """Only columns that hold a value somewhere: an 80-column terminal has no room to spare.
    A Trainer's own numbers (TRL's token accuracy, entropy, ...) get columns only for splits
    overmem has not evaluated itself; ``recommend --json`` always has them."""
    cols = []
    own = set()
    for split in summary.splits:
        if any(r.get(split).ppl is not None for r in summary.rows):
            cols.append(Column(f"{split}-ppl", f"{split} ppl", split, "ppl"))
        if any(r.get(split).acc is not None for r in summary.rows):
            cols.append(Column(f"{split}-acc", f"{split} acc%", split, "acc"))
            own.add(split)
            if len({r.get(split).n for r in summary.rows if r.get(split).acc is not None}) > 1:
                # rows generated differ (eval --adaptive, --limit): each accuracy's n is shown
                cols.append(Column(f"{split}-n", f"{split} n", split, "n"))
    for split, metric in sorted({(s, m) for _, s, m in trainer if s not in own}):
        name = metric[len(TRAINER_METRIC):]
        cols.append(Column(f"{split}-{metric}", f"{split} {name} (trainer)", split, metric))
    return tuple(cols)


def _cell(row: CheckpointValues, col: Column, trainer: dict) -> str:
    if col.metric == "ppl":
        return fmt_ppl(row.get(col.split).ppl)
    if col.metric == "acc":
        return fmt_pct(row.get(col.split).acc)
    if col.metric == "n":
        v = row.get(col.split)
        return "-" if v.acc is None or v.n is None else str(v.n)
    value = trainer.get((row.name, col.split, col.metric))
    return "-" if value is None else f"{value:.4g}"


def sorted_rows(summary: Summary, sort: str) -> list[CheckpointValues]:
    rows = list(summary.rows)
    split = summary.split
    if sort == "ppl" and split:
        rows.sort(key=lambda r: (r.get(split).ppl is None, r.get(split).ppl or 0))
    elif sort == "acc" and split:
        rows.sort(key=lambda r: (r.get(split).acc is None, -(r.get(split).acc or 0)))
    elif sort == "phase":
        rows.sort(key=lambda r: _PHASE_ORDER.get(phase_of(summary, r.name), 5))
    return rows


def table_model(summary: Summary, sort: str = "epoch", marked: frozenset = frozenset()) -> TableModel:
    trainer = trainer_values(summary.run)
    columns = columns_of(summary, trainer)
    rows = tuple(
        TableRow(name=r.name, epoch=fmt_epoch(r.checkpoint.epoch), phase=phase_of(summary, r.name),
                 marks=marks_for(summary, r.name), cells=tuple(_cell(r, c, trainer) for c in columns),
                 recommended=r.name == summary.advice.recommended, marked=r.name in marked)
        for r in sorted_rows(summary, sort)
    )
    title = (f"{summary.run.name} · phases on {summary.split or '-'} · ppl = {summary.ppl_label}"
             + (f" · acc = Trainer's {summary.acc_metric[len(TRAINER_METRIC):]}"
                if summary.acc_metric.startswith(TRAINER_METRIC) else ""))
    width = max([len("checkpoint")] + [len(r.name) for r in rows])
    return TableModel(title, columns, rows, width)


def markdown_table(model: TableModel) -> list[str]:
    """The table as Markdown lines."""
    head = ["checkpoint", "epoch"] + [c.title for c in model.columns] + ["phase", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in model.rows:
        lines.append("| " + " | ".join([r.name, r.epoch, *r.cells, r.phase, r.marks]) + " |")
    return lines
