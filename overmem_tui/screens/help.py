"""Every key of the watch screen, in one place."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from overmem.phases import phase_legend

EXTRA = [("up/down", "select a checkpoint"), ("click a header", "sort by that column")]


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.bindings_list = bindings

    def compose(self) -> ComposeResult:
        table = Table(title="overmem watch: keys", show_header=False, box=None, padding=(0, 2))
        for key, what in EXTRA:
            table.add_row(f"[bold]{key}[/]", what)
        for b in self.bindings_list:
            keys = b.key.replace("right_square_bracket", "]").replace("left_square_bracket", "[")
            keys = keys.replace("question_mark", "?")
            table.add_row(f"[bold]{keys}[/]", b.description)
        table.add_row("", "")
        table.add_row("[bold]phases[/]", phase_legend())
        with VerticalScroll(classes="dialog", id="help-body"):
            yield Static(table)
