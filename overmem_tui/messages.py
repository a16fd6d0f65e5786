"""Messages posted by background workers (they never touch widgets themselves)."""

from __future__ import annotations

from textual.message import Message

from overmem.rundir.records import Run


class RunUpdated(Message):
    """A new snapshot of run ``index`` (or the error that prevents reading it)."""

    def __init__(self, index: int, run: Run | None, error: str | None = None) -> None:
        super().__init__()
        self.index = index
        self.run = run
        self.error = error
