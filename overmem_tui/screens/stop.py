"""Ask a running training to stop at its next checkpoint (confirm first)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label

from overmem_tui.screens.dialog import ActionDialog


class StopScreen(ActionDialog):
    def __init__(self, run_path: str) -> None:
        super().__init__()
        self.run_path = run_path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"ask the training of {self.run_path} to stop at its next checkpoint?")
            yield Label("it keeps every checkpoint saved so far; --resume continues it later", id="hint")
            yield Label("", id="status")
            with Horizontal(classes="buttons"):
                yield Button("stop training", variant="error", id="go")
                yield Button("cancel", id="cancel")

    def start(self) -> None:
        self.query_one("#go", Button).disabled = True
        self.request()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def request(self) -> None:
        from overmem.training.early_stop import request_stop

        request_stop(self.run_path)

    def finished(self, result) -> None:
        self.app.notify("asked the training to stop at its next checkpoint")
        self.dismiss(True)
