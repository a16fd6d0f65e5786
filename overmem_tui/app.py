"""The overmem Textual app and its one factory (used by the CLI and the tests)."""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import App

from overmem_tui.screens.main import WatchScreen


class OvermemApp(App):
    CSS_PATH = "watch.tcss"
    TITLE = "overmem watch"

    def __init__(self, paths: list[str], poll_interval: float = 0.3, clock=time.time, wait: bool = False,
                 acc_metric: str | None = None) -> None:
        super().__init__()
        self.paths = paths
        self.poll_interval = poll_interval
        self.clock = clock
        self.wait = wait
        self.acc_metric = acc_metric

    def on_mount(self) -> None:
        self.push_screen(WatchScreen(self.paths, self.poll_interval, self.clock, self.wait, self.acc_metric))

    @property
    def watch_screen(self) -> WatchScreen:
        return next(s for s in self.screen_stack if isinstance(s, WatchScreen))


def make_app(runs: list[str | Path] | None = None, poll_interval: float = 0.3, clock=time.time,
             wait: bool = False, acc_metric: str | None = None) -> OvermemApp:
    """The one way to build the app: the CLI and the tests both call this."""
    paths = [str(Path(r).expanduser().resolve()) for r in (runs or ["."])]
    return OvermemApp(paths, poll_interval, clock, wait, acc_metric)
