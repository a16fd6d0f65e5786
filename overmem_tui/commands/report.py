from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem_tui.options import AccMetricOpt, RunArg, SplitOpt


def report(
    run: RunArg = Path("."),
    out: Annotated[Optional[Path], typer.Option("--out", help="FILE.png, .svg, .md (with a .png beside it) or .html.")] = None,
    split: SplitOpt = None,
    acc_metric: AccMetricOpt = None,
) -> None:
    """Figure and report: curves by phase, the recommendation, merges and probes."""
    from overmem.errors import UsageError
    from overmem.report import write_report
    from overmem.rundir import load_run
    from overmem.rundir.outputs import refuse_reason
    from overmem.rundir.sources import run_dir_for
    from overmem.summary import require_metrics, summarize

    summary = require_metrics(summarize(load_run(run), split, acc_metric=acc_metric))
    target = out or run_dir_for(summary.run.path).path / "report.md"  # a Trainer folder's goes to its overlay
    if out is not None and (reason := refuse_reason(out)):
        raise UsageError(f"--out: {reason}; choose a file outside it")
    for path in write_report(summary, target):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command()(report)
