"""Merge the marked checkpoints: confirm weights, run the real merge in a worker, show progress."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, ProgressBar

from overmem_tui.screens.dialog import ActionDialog


class MergeScreen(ActionDialog):
    def __init__(self, run_path: str, names: list[str]) -> None:
        super().__init__()
        self.run_path = run_path
        self.names = names

    def compose(self) -> ComposeResult:
        equal = ",".join(f"{1 / len(self.names):.4g}" for _ in self.names)
        with Vertical(classes="dialog"):
            yield Label(f"merge {' + '.join(self.names)} as theta_base + sum w_i delta_i (exact)")
            yield Label("weights, comma-separated:")
            yield Input(equal, id="weights")
            yield ProgressBar(id="progress", show_eta=False)
            yield Label("", id="status")
            with Horizontal(classes="buttons"):
                yield Button("merge", variant="primary", id="go")
                yield Button("cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#progress").display = False

    def start(self) -> None:
        text = self.query_one("#weights", Input).value
        try:
            weights = [float(w) for w in text.split(",") if w.strip()]
        except ValueError:
            self.query_one("#status", Label).update(f"weights must be numbers: {text!r}")
            return
        self.query_one("#go", Button).disabled = True
        self.query_one("#progress").display = True
        self.run_merge(weights)

    class Progressed(Message):
        """The merge worker wrote ``done`` of ``total`` tensors (or modules); ``name`` is the last."""

        def __init__(self, done: int, total: int, name: str) -> None:
            super().__init__()
            self.done, self.total, self.name = done, total, name

    @work(thread=True, exclusive=True, exit_on_error=False)
    def run_merge(self, weights: list[float]) -> str:
        from overmem.merging.merge import plan_merge, run_merge
        from overmem.progress import Advanced

        def on_event(event) -> None:
            if isinstance(event, Advanced):
                self.post_message(self.Progressed(event.done, event.total, event.subject))

        return run_merge(plan_merge(self.run_path, self.names, weights=weights), on_event).name

    def on_merge_screen_progressed(self, message: Progressed) -> None:
        self.query_one("#progress", ProgressBar).update(total=message.total, progress=message.done)
        self.query_one("#status", Label).update(Text(message.name))

    def finished(self, name: str) -> None:
        self.app.notify(f"merged into {name}; a following evaluator will evaluate it")
        self.dismiss(name)
