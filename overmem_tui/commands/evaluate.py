from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem_tui.options import RunArg


def eval_command(
    run: RunArg = Path("."),
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated splits.")] = "train,val,test",
    checkpoints: Annotated[str, typer.Option("--checkpoints", help="Comma-separated names, or 'all'.")] = "all",
    backend: Annotated[str, typer.Option("--backend", help="hf, vllm, or auto (vllm when importable).")] = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate the first N rows of each split.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Evaluate new checkpoints until training ends.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute metrics already in metrics.jsonl.")] = False,
    metrics: Annotated[str, typer.Option("--metrics", help="ppl, acc or both.")] = "ppl,acc",
    split_file: Annotated[Optional[list[str]], typer.Option("--split-file", help="NAME=PATH: define or replace a split (jsonl/json/parquet/csv).")] = None,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="For --split-file data.")] = None,
    response_field: Annotated[Optional[str], typer.Option("--response-field", help="For --split-file data.")] = None,
) -> None:
    """Evaluate checkpoints: reference perplexity and greedy accuracy per split."""
    from overmem.errors import UsageError
    from overmem.evaluation.runner import METRICS, EvalOptions, Evaluator
    from overmem.data.loaders import SplitSpec, resolve_source
    from overmem_tui.options import csv_list, name_paths
    from overmem_tui.progress import EvalDisplay

    files = {
        name: SplitSpec(resolve_source(path, prompt_field=prompt_field, response_field=response_field)).to_json()
        for name, path in name_paths(split_file, "--split-file").items()
    }
    wanted = tuple(csv_list(metrics))
    if not wanted or set(wanted) - set(METRICS):
        raise UsageError(f"--metrics takes {', '.join(METRICS)}")
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    options = EvalOptions(
        splits=tuple(csv_list(splits)),
        checkpoints=None if checkpoints == "all" else tuple(csv_list(checkpoints)),
        backend=backend,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        limit=limit,
        force=force,
        metrics=wanted,
        split_files=files,
    )
    with EvalDisplay() as display:
        evaluator = Evaluator(run, options, on_event=display)
        try:
            count = evaluator.follow() if follow else evaluator.evaluate_pending()
        finally:
            evaluator.close()
    display.console.print(f"evaluated {count} checkpoint(s)")
    from overmem.rundir import load_run
    from overmem.summary import summarize
    from overmem_tui.render import advice_text, phase_table

    summary = summarize(load_run(run))
    if summary.splits:
        display.console.print(phase_table(summary))
        display.console.print(advice_text(summary))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
