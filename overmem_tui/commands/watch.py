from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem_tui.options import AccMetricOpt


def watch(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories (default: the current one).")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls of the run files.")] = 0.3,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for run directories that do not exist yet.")] = False,
    acc_metric: AccMetricOpt = None,
) -> None:
    """Live TUI: phase-coloured curves, checkpoint table, recommendation, merge and export keys."""
    import sys

    from overmem.errors import RunNotFound, UsageError
    from overmem.rundir.sources import detect_source

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("watch needs a terminal; use overmem recommend for text output")
    if interval <= 0:
        raise UsageError(f"--interval must be positive, got {interval}")
    paths = runs or [Path(".")]
    if not wait:
        for path in paths:
            try:  # one clear line now, not an empty screen forever
                detect_source(path.expanduser().resolve())
            except RunNotFound as exc:
                raise RunNotFound(f"{exc} (--wait waits for it to appear)") from None
    from overmem_tui.app import make_app

    make_app(paths, poll_interval=interval, wait=wait, acc_metric=acc_metric).run()


def register(app: typer.Typer) -> None:
    app.command()(watch)
