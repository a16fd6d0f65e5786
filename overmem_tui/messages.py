"""Messages posted by background workers (they never touch widgets themselves)."""

from __future__ import annotations

from textual.message import Message

from overmem_tui.state import RunView


class RunUpdated(Message):
    """A new view of run ``index`` computed in the worker, or why it cannot be read now."""

    def __init__(self, index: int, view: RunView | None, error: str | None = None) -> None:
        super().__init__()
        self.index = index
        self.view = view
        self.error = error

    def can_replace(self, message: Message) -> bool:
        """A newer view of the same run makes an older one still in the queue moot."""
        return isinstance(message, RunUpdated) and message.index == self.index
