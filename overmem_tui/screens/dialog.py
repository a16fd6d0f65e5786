"""A confirm dialog that runs its action in a worker and reports failure in place."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from overmem_tui.workers import WorkerOutcomes


class ActionDialog(WorkerOutcomes, ModalScreen):
    """Subclasses compose a #go button, a #cancel button and a #status label, define start() (which
    starts a worker) and finished(result); a failure is shown in #status and #go is enabled again."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self.start()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.start()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def start(self) -> None:  # pragma: no cover - overridden
        """Begin the dialog's action."""

    def finished(self, result) -> None:  # pragma: no cover - overridden
        """The action's worker returned ``result``."""

    def worker_done(self, name: str, result) -> None:
        self.finished(result)

    def worker_failed(self, name: str, line: str) -> None:
        self.query_one("#status", Label).update(Text(line, style="red"))
        self.query_one("#go", Button).disabled = False
