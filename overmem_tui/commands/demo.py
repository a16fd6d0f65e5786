from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem.demo import DemoSettings


def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the demo run(s) go.")] = Path("overmem-demo"),
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the preset's).")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="Train three learning rates; compare them in watch (c).")] = False,
    no_watch: Annotated[bool, typer.Option("--no-watch", help="Print results instead of opening the TUI.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    loss: Annotated[str, typer.Option("--loss", help="sft (the finding) or mar (the memorization-aware remedy).")] = "sft",
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs (default: the preset's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    stop_at: Annotated[str, typer.Option("--stop-at", help="purple: stop the training once it has turned purple (train --stop-at); none: all epochs.")] = "none",
    patience: Annotated[int, typer.Option("--patience", help="Evaluated checkpoints in a row in the --stop-at phase before the training stops.")] = DemoSettings.patience,
) -> None:
    """Show over-memorization in minutes: the tiny model on synthetic-math, live."""
    from overmem.demo import DEMO_LR, SWEEP_LRS, outcome, prepare, start_in_background
    from overmem.stopping import check_stop_rule
    from overmem_tui.render import advice_text, phase_table
    from rich.console import Console

    console = Console()
    defaults = DemoSettings(out=out)
    from overmem.training.losses import get_loss

    get_loss(loss)  # one line for an unknown loss, before anything starts
    check_stop_rule(stop_at, patience)
    settings = DemoSettings(out=out.resolve(), lr=lr or DEMO_LR, seed=seed, epochs=epochs or defaults.epochs,
                            loss=loss, lrs=SWEEP_LRS if sweep else (), force=force, stop_at=stop_at, patience=patience)
    prepare(settings)
    start = time.time()
    thread, progress, errors = start_in_background(settings)
    watch = not no_watch and sys.stdin.isatty() and sys.stdout.isatty()
    if watch:
        from overmem_tui.app import make_app

        make_app(settings.run_dirs()).run()
    with console.status("") as status:
        while thread.is_alive():
            status.update(f"[bold]demo[/] {progress.stage}  ({time.time() - start:.0f}s)")
            thread.join(0.5)
    if errors:
        raise errors[0]
    for run_dir in settings.run_dirs():
        summary, lines = outcome(run_dir, progress.merges.get(str(run_dir)))
        console.print(phase_table(summary))
        console.print(advice_text(summary))
        for line in lines:
            console.print(f"[bold]{'stop' if line.startswith('stopped') else 'merge'}:[/] {line}")
    console.print(f"demo finished in {time.time() - start:.0f}s; explore it with: overmem watch "
                  + " ".join(str(p) for p in settings.run_dirs()))


def register(app: typer.Typer) -> None:
    app.command()(demo)
