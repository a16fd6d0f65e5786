"""How the TUI's background jobs end: one handler for every worker of a screen.

A screen's thread worker returns its result or raises; it never touches a widget.
``Worker.StateChanged`` reaches the screen on the UI thread, where this one handler
hands a result to ``worker_done`` and a failure, as one line, to ``worker_failed``.
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState

from overmem.errors import OvermemError


def failure_line(exc: BaseException | None) -> str:
    """A failure as the one line a user reads: overmem's own errors and the system's as they
    are, anything else (a bug) with its type."""
    if exc is None:
        return "failed"
    if isinstance(exc, (OvermemError, OSError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class WorkerOutcomes:
    """Mixed into a Screen: routes its workers' results and failures."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.SUCCESS:
            self.worker_done(worker.name, worker.result)
        elif event.state == WorkerState.ERROR:
            self.worker_failed(worker.name, failure_line(worker.error))

    def worker_done(self, name: str, result) -> None:
        """A worker named ``name`` returned ``result``."""

    def worker_failed(self, name: str, line: str) -> None:
        self.notify(line, severity="error")
