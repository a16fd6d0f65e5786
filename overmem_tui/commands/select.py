from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem_tui.options import ForceOpt, RunArg


def select(
    run: RunArg,
    name: Annotated[str, typer.Argument(help="Checkpoint name, e.g. ep3.")],
    export: Annotated[Optional[Path], typer.Option("--export", help="Copy the checkpoint folder here.")] = None,
    link: Annotated[bool, typer.Option("--link", help="Symlink instead of copying.")] = False,
    force: ForceOpt = False,
) -> None:
    """Record the chosen checkpoint in the run; optionally export it to a folder."""
    from overmem.selection import select_checkpoint
    from overmem_tui.signals import committed

    target = select_checkpoint(run, name, export, link=link, force=force)
    committed()
    typer.echo(f"selected {name}" + (f" -> {target}" if target else ""))


def register(app: typer.Typer) -> None:
    app.command()(select)
