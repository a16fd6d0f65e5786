from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem.data.answers import ANSWER_FORMATS
from overmem.data.template import TEMPLATE_KINDS
from overmem.evaluation.options import DEFAULT_MAX_LEN, EVAL_METRICS, EvalOptions
from overmem.phases import Thresholds
from overmem_tui.options import AccMarginOpt, AccMetricOpt, BandOpt, PplFactorOpt, RunArg, TrustOpt, ZOpt


def eval_command(
    run: RunArg = Path("."),
    splits: Annotated[Optional[str], typer.Option("--splits", help="Comma-separated splits (default: every split the run defines).")] = None,
    checkpoints: Annotated[str, typer.Option("--checkpoints", help="Comma-separated names (ep3, checkpoint-12), or 'all'.")] = "all",
    backend: Annotated[str, typer.Option("--backend", help="hf, vllm, or auto (vllm when importable).")] = EvalOptions.backend,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = EvalOptions.max_new_tokens,
    batch_size: Annotated[int, typer.Option("--batch-size")] = EvalOptions.batch_size,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate the first N rows of each split.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Evaluate new checkpoints until training ends.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute metrics already in metrics.jsonl.")] = False,
    metrics: Annotated[str, typer.Option("--metrics", help=f"{', '.join(EVAL_METRICS)}, or several.")] = ",".join(EvalOptions.metrics),
    split_file: Annotated[Optional[list[str]], typer.Option("--split-file", help="NAME=PATH: define or replace a split (jsonl/json/parquet/csv, TRL messages or prompt/completion too); remembered in the run.")] = None,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="For --split-file data.")] = None,
    response_field: Annotated[Optional[str], typer.Option("--response-field", help="For --split-file data.")] = None,
    answer_format: Annotated[Optional[str], typer.Option("--answer-format", help=f"How --split-file references state their answer: {', '.join(ANSWER_FORMATS)} (default auto: any marker).")] = None,
    answer_field: Annotated[Optional[str], typer.Option("--answer-field", help="A --split-file column that holds the gold answer.")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help=f"Prompt format, remembered in the run: {'; '.join(f'{k}: {v}' for k, v in TEMPLATE_KINDS.items())}; or a file holding {{instruction}}.")] = None,
    system: Annotated[Optional[str], typer.Option("--system", help="System message for --template chat.")] = None,
    max_len: Annotated[Optional[int], typer.Option("--max-len", help=f"Longest prompt + reference in tokens (remembered; default the run's, else {DEFAULT_MAX_LEN}).")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model (folder or hub id) of a Trainer folder whose files do not name it; remembered.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cuda:N (or cuda:N,M for --tensor-parallel-size 2): evaluate on those GPUs only, e.g. beside a training on the others; or cpu.")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option("--gpu-memory-utilization", help="vLLM's share of each GPU's memory (default 0.45).")] = None,
    tensor_parallel_size: Annotated[Optional[int], typer.Option("--tensor-parallel-size", help="vLLM: GPUs one model spans.")] = None,
    steal_claims: Annotated[bool, typer.Option("--steal-claims", help="Evaluate checkpoints that other evaluators claim.")] = False,
    claim_timeout: Annotated[float, typer.Option("--claim-timeout", help="Seconds without a heartbeat after which another evaluator's claim is taken over.")] = EvalOptions.claim_timeout,
    task: Annotated[Optional[list[str]], typer.Option("--task", help="An lm-evaluation-harness task as a split named after it: a task or group name from lm-eval's registry, or your task YAML file or folder (its prompt, generation settings, filters and exact_match give the accuracy); remembered in the run. Needs overmem[lm-eval].")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option("--num-fewshot", help="For --task: few-shot examples (default the task's own), as lm-eval's --num_fewshot.")] = None,
    apply_chat_template: Annotated[bool, typer.Option("--apply-chat-template", help="For --task: render prompts with the tokenizer's chat template, as lm-eval's --apply_chat_template.")] = False,
    fewshot_as_multiturn: Annotated[bool, typer.Option("--fewshot-as-multiturn", help="For --task with --apply-chat-template: few-shot examples as chat turns.")] = False,
    acc_metric: AccMetricOpt = None,
    adaptive: Annotated[bool, typer.Option("--adaptive/--full", help="--adaptive: perplexity of every checkpoint first, then generate each checkpoint only as far as its verdict needs, in one fixed row order shared by every checkpoint (README: How phases are decided); --full: every row.")] = EvalOptions.adaptive,
    acc_margin: AccMarginOpt = Thresholds.acc_margin,
    z: ZOpt = Thresholds.z,
    band: BandOpt = Thresholds.band,
    ppl_factor: PplFactorOpt = Thresholds.ppl_factor,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Evaluate checkpoints: reference perplexity and greedy accuracy per split.

    Works on overmem runs and on Trainer/TRL/axolotl output folders: there the base is
    evaluated as ep0, every checkpoint-N after it, and results go to DIR/overmem/.
    """
    given = device
    device = _claim_devices(device)
    from overmem.data.loaders import SplitSpec, resolve_source
    from overmem.data.template import PromptFormat
    from overmem.errors import UsageError
    from overmem.evaluation.runner import Evaluator
    from overmem.models.loading import resolve_base
    from overmem_tui.options import csv_list, name_paths
    from overmem_tui.progress import EvalDisplay

    if answer_format is not None and answer_format not in ANSWER_FORMATS:
        raise UsageError(f"--answer-format must be one of {', '.join(ANSWER_FORMATS)}")
    files = {
        name: SplitSpec(resolve_source(path, prompt_field=prompt_field, response_field=response_field,
                                       answer_format=answer_format, answer_field=answer_field)).to_json()
        for name, path in name_paths(split_file, "--split-file").items()
    }
    files.update(_task_splits(task, num_fewshot, apply_chat_template, fewshot_as_multiturn))
    wanted = tuple(csv_list(metrics))
    if system and template != "chat":
        raise UsageError("--system goes with --template chat")
    options = EvalOptions(
        splits=tuple(csv_list(splits)) or None,
        checkpoints=None if checkpoints == "all" else tuple(csv_list(checkpoints)),
        backend=backend,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        limit=limit,
        force=force,
        metrics=wanted,
        split_files=files,
        template=PromptFormat.parse(template, system).to_json() if template else None,
        max_len=max_len,
        base=resolve_base(base) if base else None,
        device=device,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        steal_claims=steal_claims,
        claim_timeout=claim_timeout,
        trust_remote_code=trust_remote_code,
        acc_metric=acc_metric,
        adaptive=adaptive,
        thresholds=Thresholds(ppl_factor=ppl_factor, band=band, z=z, acc_margin=acc_margin),
    )
    from overmem.models.loading import check_device

    check_device(device, tensor_parallel_size or 1, label=given)  # named as given; the rest in Evaluator
    with EvalDisplay() as display:
        evaluator = Evaluator(run, options, on_event=display)
        display.console.print(f"[dim]prompts: {evaluator.ctx.template.describe()}; splits: {', '.join(evaluator.specs)}; "
                              f"results in {evaluator.rundir.path}[/]")
        try:
            count = evaluator.follow() if follow else evaluator.evaluate_pending()
        finally:
            evaluator.close()
    display.console.print(f"evaluated {count} checkpoint(s)")
    from overmem.rundir import load_run
    from overmem.summary import summarize
    from overmem_tui.render import advice_text, phase_table

    summary = summarize(load_run(run), thresholds=options.thresholds)
    if summary.splits:
        display.console.print(phase_table(summary))
        display.console.print(advice_text(summary))
    evaluator.check_failures()
    from overmem.rundir.reader import check_problems

    check_problems(summary.run, "; the result above is computed around them (listed as problems)")


def _task_splits(tasks: list[str] | None, num_fewshot: int | None, chat: bool, multiturn: bool) -> dict:
    """The splits the --task options define (name -> SplitSpec json)."""
    from overmem.errors import UsageError

    if not tasks:
        if num_fewshot is not None or chat or multiturn:
            raise UsageError("--num-fewshot, --apply-chat-template and --fewshot-as-multiturn go with --task")
        return {}
    if multiturn and not chat:
        raise UsageError("--fewshot-as-multiturn goes with --apply-chat-template (as in lm-eval)")
    if num_fewshot is not None and not 0 <= num_fewshot <= 1000:
        raise UsageError(f"--num-fewshot must be 0 to 1000, got {num_fewshot}")
    from overmem.evaluation.lm_eval_tasks import TaskOptions, task_splits

    options = TaskOptions(num_fewshot, chat, multiturn)
    return {name: spec.to_json() for ref in tasks for name, spec in task_splits(ref, options).items()}


def _claim_devices(device: str | None) -> str | None:
    """``cuda:1`` (or ``cuda:1,2``): this process sees only those GPUs, before torch or vLLM
    start, so both backends run there; inside, the first of them is cuda:0."""
    import os

    from overmem.errors import UsageError

    if device is None or device == "cpu":
        return device
    if not device.startswith("cuda:") or not all(p.isdigit() for p in device[5:].split(",")):
        raise UsageError(f"--device takes cpu, cuda:N or cuda:N,M..., got {device!r}")
    os.environ["CUDA_VISIBLE_DEVICES"] = device[5:]
    return "cuda:0"


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
