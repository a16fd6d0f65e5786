from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem_tui.options import RunArg, SplitOpt


def report(
    run: RunArg = Path("."),
    out: Annotated[Optional[Path], typer.Option("--out", help="FILE.png, .svg, .md (with a .png beside it) or .html.")] = None,
    split: SplitOpt = None,
) -> None:
    """Figure and report: curves by phase, the recommendation, merges and probes."""
    from overmem.report import write_report
    from overmem.rundir import load_run
    from overmem.summary import require_metrics, summarize

    summary = require_metrics(summarize(load_run(run), split))
    target = out or Path(summary.run.path) / "report.md"
    for path in write_report(summary, target):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command()(report)
