from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem.probes.options import ProbeOptions
from overmem.probes.registry import PROBES
from overmem_tui.options import RunArg, TrustOpt


def probe(
    run: RunArg = Path("."),
    checkpoints: Annotated[str, typer.Option("--checkpoints", help="Names, or recommended/latest.")] = "recommended,latest",
    probes: Annotated[str, typer.Option("--probes", help="; ".join(f"{n}: {p.help}" for n, p in PROBES.items()))] = ",".join(ProbeOptions.probes),
    n_samples: Annotated[int, typer.Option("--n-samples", help="Samples per query (diversity, calibration).")] = ProbeOptions.n_samples,
    temperature: Annotated[float, typer.Option("--temperature")] = ProbeOptions.temperature,
    ood: Annotated[Optional[list[str]], typer.Option("--ood", help="NAME=PATH (file, hub id or preset); repeatable.")] = None,
    reward_model: Annotated[Optional[str], typer.Option("--reward-model", help="Sequence-classification model for Best-of-N.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="hf, vllm, or auto.")] = ProbeOptions.backend,
    limit: Annotated[int, typer.Option("--limit", help="Queries per probe.")] = ProbeOptions.limit,
    mia_size: Annotated[int, typer.Option("--mia-size", help="Members and non-members each.")] = ProbeOptions.mia_size,
    bins: Annotated[int, typer.Option("--bins", help="ECE bins.")] = ProbeOptions.ece_bins,
    min_k: Annotated[float, typer.Option("--min-k", help="k for Min-K% and Min-K%++.")] = ProbeOptions.min_k,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = ProbeOptions.max_new_tokens,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Behavioural probes (robustness, diversity, calibration, MIA, OOD), side by side per checkpoint."""
    from overmem.probes.compare import probe_intervals, probe_json, probe_rows
    from overmem.probes.runner import ProbeRunner
    from overmem.selection import resolve_checkpoints
    from overmem.rundir import load_run
    from overmem_tui.options import csv_list, name_paths

    sets = name_paths(ood, "--ood")
    options = ProbeOptions(probes=tuple(csv_list(probes)), n_samples=n_samples, temperature=temperature, ood=sets,
                           reward_model=reward_model, backend=backend, limit=limit, mia_size=mia_size, ece_bins=bins,
                           min_k=min_k, max_new_tokens=max_new_tokens, trust_remote_code=trust_remote_code)
    from overmem_tui.progress import EvalDisplay

    with EvalDisplay() as display:
        runner = ProbeRunner(run, options, on_event=display)
        names = resolve_checkpoints(runner.run, csv_list(checkpoints))
        runner.run_probes(names)
    result = load_run(run)
    if json_out:
        typer.echo(json.dumps({"run": str(result.path), "checkpoints": names, "probes": probe_json(result, names),
                               "probe_intervals": probe_intervals(result, names)}, indent=2))
        return
    from rich.console import Console

    from overmem_tui.render_probes import probe_table

    Console().print(probe_table(probe_rows(result, names), names, f"probes on {result.name}"))


def register(app: typer.Typer) -> None:
    app.command()(probe)
