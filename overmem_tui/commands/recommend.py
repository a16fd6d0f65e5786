from __future__ import annotations

import json
from pathlib import Path

import typer

from overmem.phases import Thresholds
from overmem_tui.options import (AccMarginOpt, AccMetricOpt, BandOpt, JsonOpt, MinGainOpt, PplFactorOpt, RunArg,
                                 SplitOpt, ZOpt)


def recommend(
    run: RunArg = Path("."),
    json_out: JsonOpt = False,
    split: SplitOpt = None,
    band: BandOpt = Thresholds.band,
    ppl_factor: PplFactorOpt = Thresholds.ppl_factor,
    z: ZOpt = Thresholds.z,
    min_gain: MinGainOpt = Thresholds.min_gain,
    acc_margin: AccMarginOpt = Thresholds.acc_margin,
    acc_metric: AccMetricOpt = None,
) -> None:
    """Classify checkpoints by phase and recommend one, with reasons."""
    from overmem.rundir import load_run
    from overmem.rundir.reader import check_problems
    from overmem.summary import require_metrics, summarize, summary_json

    thresholds = Thresholds(ppl_factor=ppl_factor, band=band, z=z, min_gain=min_gain, acc_margin=acc_margin)
    summary = require_metrics(summarize(load_run(run), split, thresholds, acc_metric=acc_metric))
    if json_out:
        typer.echo(json.dumps(summary_json(summary), indent=2))
    else:
        from rich.console import Console

        from overmem_tui.render import advice_text, phase_table

        console = Console()
        console.print(phase_table(summary))
        console.print(advice_text(summary))
    # records that could not be used are listed above and left out of every decision; the
    # exit code says the run needs attention
    check_problems(summary.run, "; the result above is computed around them (listed as problems)")


def register(app: typer.Typer) -> None:
    app.command()(recommend)
