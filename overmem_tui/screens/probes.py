"""watch's probe view: the probe comparison for the marked checkpoints."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from overmem.probes.compare import probe_rows
from overmem.rundir.records import Run
from overmem_tui.render_probes import probe_table


class ProbeScreen(Screen):
    BINDINGS = [Binding("escape,q,v", "app.pop_screen", "back")]

    def __init__(self, run: Run, names: list[str]) -> None:
        super().__init__()
        self.run = run
        self.names = names

    def compose(self) -> ComposeResult:
        rows = probe_rows(self.run, self.names)
        with VerticalScroll(id="probe-body"):
            if not self.names:
                yield Static("mark checkpoints with space, then press v")
            elif not rows:
                yield Static(Text(f"no probe results for {', '.join(self.names)} yet: run "
                                  f"overmem probe {self.run.path} --checkpoints {','.join(self.names)}"))
            else:
                yield Static(probe_table(rows, self.names, f"probes: {', '.join(self.names)}"))
        yield Footer()
