"""Typer argument and option types shared by several commands (declared once)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RunArg = Annotated[
    Path,
    typer.Argument(help="Run directory (overmem run or Hugging Face Trainer output).", show_default=True),
]
SplitOpt = Annotated[
    Optional[str], typer.Option("--split", help="Split that drives phases (default: val, else test).")
]
BandOpt = Annotated[
    float, typer.Option("--band", help="Recommendation band: log-ppl within this factor of the minimum.")
]
PplFactorOpt = Annotated[
    float, typer.Option("--ppl-factor", help="Over-memorized when log-ppl exceeds this factor of the minimum.")
]
ZOpt = Annotated[
    float, typer.Option("--z", help="Accuracy is clearly below the best beyond this many standard errors.")
]
MinGainOpt = Annotated[
    float, typer.Option("--min-gain", help="Accuracy counts as learned only this far (a fraction) above the base's.")
]
AccMarginOpt = Annotated[
    float, typer.Option("--acc-margin", help="Equivalence margin (a fraction): accuracy shown within it of the best is high, and adaptive evaluation stops there.")
]
AccMetricOpt = Annotated[
    Optional[str],
    typer.Option("--acc-metric", help="A metric your Trainer logged that is generation accuracy (eval_accuracy, "
                 "eval_gsm8k_accuracy, or as shown: accuracy): it drives phases instead of overmem's accuracy "
                 "(default: the one given to overmem eval, else overmem's own; 'acc' is overmem's)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing outputs (only ones overmem wrote).")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model folder's own code (transformers' auto_map); a run's record never allows it.")]


def csv_list(value: str | None) -> list[str]:
    """Split a comma-separated option into its non-empty parts."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def name_paths(items: list[str] | None, option: str) -> dict[str, str]:
    """Parse repeated NAME=PATH options into a dict (one clear error for a malformed one)."""
    from overmem.errors import UsageError
    from overmem.rundir.names import safe_name

    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"{option} expects NAME=PATH, got {item!r}")
        out[safe_name(name, f"{option} name")] = path
    return out
