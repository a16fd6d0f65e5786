from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem.merging.merge_methods import MergeMethod
from overmem_tui.options import ForceOpt


def merge(
    checkpoints: Annotated[list[str], typer.Argument(help="Checkpoint names of the run (ep3, checkpoint-12) or folders.")],
    run: Annotated[Optional[Path], typer.Option("--run", help="Run directory (overmem run or Trainer output); default: the current one, if it is a run.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model (folder or hub id) for folders merged outside a run; adapters name their own.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="KEY=VALUE for the merge method (e.g. density=0.3 for ties).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Comma-separated, one per checkpoint (default: equal, summing to 1).")] = None,
    method: Annotated[str, typer.Option("--method", help="; ".join(
        f"{n}: {m.help}" + "".join(f" [--param {p.name}={p.default:g}: {p.help}]" for p in m.params)
        for n, m in MergeMethod.registry.items()))] = "linear",
    form: Annotated[Optional[str], typer.Option("--as", help="full (a model folder) or adapter (an exact stacked LoRA); default adapter when every input is one.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: RUN/checkpoints/merge-...).")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Max shard size in MB for full outputs.")] = 2048,
    force: ForceOpt = False,
) -> None:
    """Merge checkpoints exactly: theta_base + sum_i w_i delta_i (LoRA delta = scale * B @ A)."""
    from overmem.errors import UsageError
    from overmem.merging.merge import plan_merge, run_merge
    from overmem.params import parse_assignments
    from overmem_tui.options import csv_list
    from overmem_tui.progress import MergeDisplay
    from overmem_tui.signals import committed

    from overmem.params import require

    require("--shard-size", shard_size, int, low=1)
    try:
        parsed = [float(w) for w in csv_list(weights)] if weights else None
    except ValueError:
        raise UsageError(f"--weights must be numbers, got {weights!r}") from None
    plan = plan_merge(run or Path("."), checkpoints, weights=parsed, method=method, form=form, out=out, force=force,
                      max_shard_bytes=shard_size * 1024 * 1024, base=base,
                      params=parse_assignments(param, "--param"))
    with MergeDisplay(plan.form) as display:
        info = run_merge(plan, display)
    committed()
    typer.echo(f"merged {' + '.join(info.parents)} (weights {', '.join(f'{w:g}' for w in info.weights)}, "
               f"{plan.method}, {plan.form}) -> {plan.out}")
    if plan.register:
        typer.echo(f"registered as checkpoint {info.name}; evaluate it with: overmem eval {plan.run.path} "
                   f"--checkpoints {info.name}")
    elif plan.form == "adapter":
        typer.echo(f"an adapter on {plan.base_ref}")


def register(app: typer.Typer) -> None:
    app.command()(merge)
