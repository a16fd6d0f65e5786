from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def watch(
    runs: Annotated[Optional[list[Path]], typer.Argument(help="Run directories (default: the current one).")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls of the run files.")] = 0.3,
) -> None:
    """Live TUI: phase-coloured curves, checkpoint table, recommendation, merge and export keys."""
    from overmem_tui.app import make_app

    make_app(runs or [Path(".")], poll_interval=interval).run()


def register(app: typer.Typer) -> None:
    app.command()(watch)
