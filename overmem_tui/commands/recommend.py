from __future__ import annotations

import json
from pathlib import Path

import typer

from overmem_tui.options import BandOpt, JsonOpt, PplFactorOpt, RunArg, SplitOpt, ZOpt


def recommend(
    run: RunArg = Path("."),
    json_out: JsonOpt = False,
    split: SplitOpt = None,
    band: BandOpt = 1.25,
    ppl_factor: PplFactorOpt = 1.5,
    z: ZOpt = 2.0,
) -> None:
    """Classify checkpoints by phase and recommend one, with reasons."""
    from overmem.phases import Thresholds
    from overmem.rundir import load_run
    from overmem.summary import require_metrics, summarize, summary_json

    thresholds = Thresholds(ppl_factor=ppl_factor, band=band, z=z)
    summary = require_metrics(summarize(load_run(run, strict=True), split, thresholds))
    if json_out:
        typer.echo(json.dumps(summary_json(summary), indent=2))
        return
    from rich.console import Console

    from overmem_tui.render import advice_text, phase_table

    console = Console()
    console.print(phase_table(summary))
    console.print(advice_text(summary))


def register(app: typer.Typer) -> None:
    app.command()(recommend)
