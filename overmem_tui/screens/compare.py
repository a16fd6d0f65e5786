"""Several runs overlaid: test (or the chosen split's) curves, each run's phases as a strip."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from overmem_tui.plotting import FALLBACK_STYLES, Plot, PlotRenderable, Series
from overmem.table import phase_of, trajectory_rows
from overmem.values import x_of
from overmem.units import pct
from overmem_tui.state import WatchState
from overmem_tui.theme import PHASE_STYLE

MARKS = "●◆▲■✚"


def compare_plots(state: WatchState, split: str = "test") -> tuple[Plot, Plot, list[Text]]:
    ppl, acc, strips = [], [], []
    for i, view in enumerate(state.views):
        if view is None or view.summary is None:
            continue
        summary = view.summary
        use = split if split in summary.splits else summary.split
        rows = trajectory_rows(summary)
        style, mark = FALLBACK_STYLES[i % len(FALLBACK_STYLES)], MARKS[i % len(MARKS)]
        lr = view.run.info.hyperparameters.get("lr") if view.run.info else None
        label = f"{view.run.name}" + (f" (lr {lr:g})" if isinstance(lr, (int, float)) else "")
        p = tuple((x_of(r), r.get(use).ppl) for r in rows if use and r.get(use).ppl is not None)
        a = tuple((x_of(r), pct(r.get(use).acc)) for r in rows if use and r.get(use).acc is not None)
        if p:
            ppl.append(Series(label, p, style, mark))
        if a:
            acc.append(Series(label, a, style, mark))
        strip = Text(f"{mark} {label:<28.28} ", style=style)
        for r in rows:
            phase = phase_of(summary, r.name)
            strip.append(" ", style=PHASE_STYLE.get(phase, ""))
        if summary.advice.phases.onset:
            strip.append(f"  purple from {summary.advice.phases.onset}", style="dim")
        strips.append(strip)
    return (Plot(f"{split} perplexity, all runs", tuple(ppl)), Plot(f"{split} accuracy %, all runs", tuple(acc)),
            strips)


class CompareScreen(Screen):
    BINDINGS = [Binding("escape,q,c", "app.pop_screen", "back")]

    def __init__(self, state: WatchState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        ppl, acc, strips = compare_plots(self.state)
        with Vertical(id="compare-body"):
            yield Static(PlotRenderable(ppl, height=12))
            yield Static(PlotRenderable(acc, height=9))
            yield Static(Group(Text("phases per checkpoint (one cell each):", style="bold"), *strips))
        yield Footer()
