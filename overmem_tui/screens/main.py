"""The watch screen: status, curves, advice, checkpoint table; live and keyboard driven."""

from __future__ import annotations

import time
from dataclasses import replace

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from overmem.table import SORTS, table_model
from overmem_tui.messages import RunUpdated
from overmem_tui.render import advice_text
from overmem_tui.state import WatchState, make_view, plots, status_line
from overmem_tui.widgets.checkpoint_table import CheckpointTable
from overmem_tui.widgets.plot import PlotView
from overmem_tui.workers import WorkerOutcomes, failure_line


class WatchScreen(WorkerOutcomes, Screen):
    BINDINGS = [
        Binding("space", "mark", "mark"),
        Binding("enter", "detail", "detail"),
        Binding("a", "recommended", "go to ★"),
        Binding("m", "merge", "merge marked"),
        Binding("x", "export", "export"),
        Binding("t", "stop_training", "stop training"),
        Binding("s", "split", "split"),
        Binding("b", "band(0.05)", "band+"),
        Binding("B", "band(-0.05)", "band-", show=False),
        Binding("p", "factor(0.1)", "factor+"),
        Binding("P", "factor(-0.1)", "factor-", show=False),
        Binding("l", "log", "log ppl"),
        Binding("o", "sort", "sort"),
        Binding("c", "compare", "compare"),
        Binding("v", "probes", "probes"),
        Binding("right_square_bracket", "run(1)", "next run", show=False),
        Binding("left_square_bracket", "run(-1)", "prev run", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    state: reactive[WatchState | None] = reactive(None, always_update=True)

    def __init__(self, paths: list[str], poll_interval: float = 0.3, clock=time.time, wait: bool = False,
                 acc_metric: str | None = None) -> None:
        super().__init__()
        self.paths = paths
        self.wait = wait
        self.poll_interval = poll_interval
        self.clock = clock
        self._initial = WatchState(views=tuple(None for _ in paths), acc_metric=acc_metric)
        self._errors: dict[int, str] = {}  # runs that cannot be read right now
        self._stopped: str | None = None  # why the poll worker stopped, if it did

    def compose(self) -> ComposeResult:
        yield Static("loading...", id="status")
        yield Static("", id="runs")
        with Horizontal(id="top"):
            with Vertical(id="curves"):
                yield PlotView(id="ppl-plot")
                yield PlotView(id="acc-plot")
            yield Static("", id="advice")
        yield CheckpointTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs").display = len(self.paths) > 1
        self.state = self._initial
        self.poll_runs()
        self.set_interval(1.0, self._tick)

    # -- background ----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll_runs(self) -> None:
        """Tail every run; compute its view here (off the UI thread) and post it whole.

        Nothing that goes wrong with one run stops the loop: an unreadable run is shown as
        such in the status line and read again on the next poll. A view is computed with the
        split and thresholds of the state it read; one that a key changed meanwhile is
        recomputed on arrival (``WatchState.with_view``), never shown stale.
        """
        from pathlib import Path

        from overmem.rundir import RunReader

        worker = get_current_worker()
        readers: list[RunReader | None] = [None] * len(self.paths)
        errors: list[str | None] = [None] * len(self.paths)
        while not worker.is_cancelled:
            for i, path in enumerate(self.paths):
                try:
                    if readers[i] is None:
                        if self.wait and not Path(path).exists():
                            raise FileNotFoundError(f"waiting for {path} to appear")
                        readers[i] = RunReader(path)
                    run = readers[i].poll()
                    if run is not None:
                        errors[i] = None
                        state = self.state  # frozen: safe to read from this thread
                        view = make_view(run, state.split_for(i), state.thresholds, tuple(readers[i].rundir.claimed()),
                                         state.acc_metric)
                        self.post_message(RunUpdated(i, view))
                except Exception as exc:  # noqa: BLE001 - shown, retried; the screen stays usable
                    readers[i] = None
                    text = failure_line(exc)
                    if text != errors[i]:
                        errors[i] = text
                        self.post_message(RunUpdated(i, None, text))
            time.sleep(self.poll_interval)

    def on_run_updated(self, message: RunUpdated) -> None:
        state = self.state
        if message.view is None:
            self._errors[message.index] = message.error
            self.state = state
            return
        self._errors.pop(message.index, None)
        self.state = state.with_view(message.index, message.view)

    def worker_failed(self, name: str, line: str) -> None:
        """The poll worker itself stopped (a bug): say so on the status line from now on."""
        self._stopped = f"stopped following the runs: {line}"
        self._show_status()

    def _tick(self) -> None:
        self._show_status()

    # -- drawing -------------------------------------------------------------------
    def watch_state(self, state: WatchState | None) -> None:
        if state is None:
            return
        with self.app.batch_update():
            self._show_status()
            self._show_runs()
            self._show_table()
            self._show_plots()
            self._show_advice()

    def _show_status(self) -> None:
        state = self.state
        if state is None:
            return
        error = self._errors.get(state.active)
        text = f"{self.paths[state.active]}: {error}" if error and state.view is None else status_line(state.view, self.clock())
        if self._stopped:
            text = f"! {self._stopped}  ·  {text}"
        self.query_one("#status", Static).update(Text(text, overflow="ellipsis", no_wrap=False))

    def _show_runs(self) -> None:
        if len(self.paths) < 2:
            return
        parts = []
        for i, path in enumerate(self.paths):
            name = path.rstrip("/").split("/")[-1] or path
            parts.append(f"[reverse] {name} [/]" if i == self.state.active else f" {name} ")
        self.query_one("#runs", Static).update("runs: " + " ".join(parts) + "   [ ] switch, c compare")

    def selected(self) -> str | None:
        return self.query_one("#table", CheckpointTable).selected()

    def _show_table(self) -> None:
        summary = self.state.summary
        model = table_model(summary, self.state.sort, self.state.marked) if summary else None
        self.query_one("#table", CheckpointTable).show(model)

    def _show_plots(self) -> None:
        summary = self.state.summary
        if summary is None:
            self.query_one("#ppl-plot", PlotView).replot(None)
            self.query_one("#acc-plot", PlotView).replot(None)
            return
        ppl, acc = plots(summary, self.state.log_scale, self.selected())
        self.query_one("#ppl-plot", PlotView).replot(ppl)
        self.query_one("#acc-plot", PlotView).replot(acc)

    def _show_advice(self) -> None:
        summary = self.state.summary
        widget = self.query_one("#advice", Static)
        if summary is None:
            widget.update("waiting for the run...")
            return
        widget.update(advice_text(summary))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.state and self.state.summary:
            self._show_plots()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # the focused table takes enter for itself; its RowSelected opens the detail screen
        self.action_detail()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        sort = "ppl" if key.endswith("-ppl") else "acc" if key.endswith("-acc") else key
        if sort in SORTS:
            self.state = replace(self.state, sort=sort)

    # -- actions -------------------------------------------------------------------
    def action_mark(self) -> None:
        name = self.selected()
        if name is None:
            return
        marked = set(self.state.marked)
        marked.symmetric_difference_update({name})
        self.state = replace(self.state, marked=frozenset(marked))

    def action_recommended(self) -> None:
        summary = self.state.summary
        if summary and summary.advice.recommended:
            table = self.query_one("#table", CheckpointTable)
            table.move_cursor(row=table.get_row_index(summary.advice.recommended))
        else:
            self.notify("no recommendation yet", severity="warning")

    def action_split(self) -> None:
        summary = self.state.summary
        if not summary or not summary.splits:
            return
        splits = list(summary.splits)
        current = summary.split
        nxt = splits[(splits.index(current) + 1) % len(splits)] if current in splits else splits[0]
        self.state = self.state.recompute(split=nxt)
        self.notify(f"phases and advice now on {nxt}")

    def action_band(self, delta: float) -> None:
        t = self.state.thresholds
        self.state = self.state.recompute(thresholds=replace(t, band=round(max(1.0, t.band + delta), 2)))

    def action_factor(self, delta: float) -> None:
        t = self.state.thresholds
        self.state = self.state.recompute(thresholds=replace(t, ppl_factor=round(max(1.05, t.ppl_factor + delta), 2)))

    def action_log(self) -> None:
        self.state = replace(self.state, log_scale=not self.state.log_scale)

    def action_sort(self) -> None:
        self.state = replace(self.state, sort=SORTS[(SORTS.index(self.state.sort) + 1) % len(SORTS)])

    def action_run(self, step: int) -> None:
        if len(self.paths) > 1:
            self.state = self.state.recompute(active=(self.state.active + step) % len(self.paths), split=None)

    def action_detail(self) -> None:
        from overmem_tui.screens.detail import DetailScreen

        name = self.selected()
        if name and self.state.summary:
            self.app.push_screen(DetailScreen(self.state.view, name))

    def action_help(self) -> None:
        from overmem_tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(self.BINDINGS))

    def action_compare(self) -> None:
        from overmem_tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(self.state))

    def action_probes(self) -> None:
        from overmem_tui.screens.probes import ProbeScreen

        view = self.state.view
        if view is None:
            return
        names = sorted(self.state.marked) or [n for n in (self.selected(),) if n]
        self.app.push_screen(ProbeScreen(view.run, names))

    def action_merge(self) -> None:
        from overmem_tui.screens.merge import MergeScreen

        view = self.state.view
        marked = [r.name for r in (view.summary.rows if view and view.summary else []) if r.name in self.state.marked]
        if len(marked) < 2:
            self.notify("mark two or more checkpoints with space first", severity="warning")
            return
        self.app.push_screen(MergeScreen(str(view.run.path), marked))

    def action_export(self) -> None:
        from overmem_tui.screens.export import ExportScreen

        name = self.selected()
        if name and self.state.view:
            self.app.push_screen(ExportScreen(str(self.state.view.run.path), name))

    def action_stop_training(self) -> None:
        from overmem_tui.screens.stop import StopScreen

        if self.state.view:
            self.app.push_screen(StopScreen(str(self.state.view.run.path)))

    def action_quit(self) -> None:
        self.app.exit()
