"""Export the selected checkpoint: record the choice in the run and copy it to a folder."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label

from overmem_tui.screens.dialog import ActionDialog


class ExportScreen(ActionDialog):
    def __init__(self, run_path: str, name: str) -> None:
        super().__init__()
        self.run_path = run_path
        self.checkpoint = name

    def compose(self) -> ComposeResult:
        default = str(Path(self.run_path).parent / f"{Path(self.run_path).name}-{self.checkpoint}")
        with Vertical(classes="dialog"):
            yield Label(f"export {self.checkpoint} (same as overmem select RUN {self.checkpoint} --export DIR)")
            yield Input(default, id="folder")
            yield Checkbox("symlink instead of copying", id="link")
            yield Label("", id="status")
            with Horizontal(classes="buttons"):
                yield Button("export", variant="primary", id="go")
                yield Button("cancel", id="cancel")

    def start(self) -> None:
        self.query_one("#go", Button).disabled = True
        self.export(self.query_one("#folder", Input).value, self.query_one("#link", Checkbox).value)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def export(self, folder: str, link: bool) -> str:
        from overmem.selection import select_checkpoint

        return str(select_checkpoint(self.run_path, self.checkpoint, folder, link=link))

    def finished(self, target: str) -> None:
        self.app.notify(f"selected {self.checkpoint}, exported to {target}")
        self.dismiss(target)
