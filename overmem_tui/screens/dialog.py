"""A confirm dialog that runs its action in a worker and reports failure in place."""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class ActionDialog(ModalScreen):
    """Subclasses compose a #go button, a #cancel button and a #status label, and define start()."""

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

    def failed(self, message: str) -> None:
        self.query_one("#status", Label).update(f"[red]{message}[/]")
        self.query_one("#go", Button).disabled = False
