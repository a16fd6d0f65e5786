from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from overmem.data.template import TEMPLATE_KINDS
from overmem.training.config import hyper_default as D
from overmem.training.config import hyper_help as H
from overmem.training.losses import Loss
from overmem.training.finetuning import Method


def _choices(registry: dict) -> str:
    return "; ".join(f"{name}: {item.help}" for name, item in registry.items())


def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")],
    model: Annotated[Optional[str], typer.Option("--model", help="Local model folder, .gguf file, hub id, or 'tiny'.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Local jsonl/json/parquet/csv file or folder, hub id, or preset (synthetic-math, metamathqa, gsm8k).")] = None,
    method: Annotated[str, typer.Option("--method", help=_choices(Method.registry))] = "lora",
    loss: Annotated[str, typer.Option("--loss", help=_choices(Loss.registry))] = "sft",
    lr: Annotated[float, typer.Option("--lr", help=H("lr"))] = D("lr"),
    epochs: Annotated[int, typer.Option("--epochs", help=H("epochs"))] = D("epochs"),
    batch_size: Annotated[int, typer.Option("--batch-size", help=H("batch_size"))] = D("batch_size"),
    micro_batch_size: Annotated[int, typer.Option("--micro-batch-size", help=H("micro_batch_size"))] = D("micro_batch_size"),
    max_len: Annotated[int, typer.Option("--max-len", help=H("max_len"))] = D("max_len"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    save_every: Annotated[str, typer.Option("--save-every", help=H("save_every"))] = D("save_every"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    schedule: Annotated[str, typer.Option("--schedule", help=H("schedule"))] = D("schedule"),
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help=H("warmup_steps"))] = D("warmup_steps"),
    weight_decay: Annotated[float, typer.Option("--weight-decay", help=H("weight_decay"))] = D("weight_decay"),
    adam_eps: Annotated[float, typer.Option("--adam-eps", help=H("adam_eps"))] = D("adam_eps"),
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help=H("max_grad_norm"))] = D("max_grad_norm"),
    log_every: Annotated[int, typer.Option("--log-every", help=H("log_every"))] = D("log_every"),
    pad_multiple: Annotated[int, typer.Option("--pad-multiple", help=H("pad_multiple"))] = D("pad_multiple"),
    precision: Annotated[str, typer.Option("--precision", help=H("precision"))] = D("precision"),
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help=H("gradient_checkpointing"))] = D("gradient_checkpointing"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the memory plan per GPU and stop; refuse a plan that does not fit.")] = False,
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs the plan counts on (default: the visible ones, else 1).")] = None,
    gpu_mem: Annotated[Optional[float], typer.Option("--gpu-mem", help="GB per GPU for the plan (default: the first GPU's, else 80).")] = None,
    fsdp: Annotated[bool, typer.Option("--fsdp", help=H("fsdp"))] = D("fsdp"),
    template: Annotated[str, typer.Option("--template", help=f"Prompt format: {'; '.join(f'{k}: {v}' for k, v in TEMPLATE_KINDS.items())}; or a file holding {{instruction}}.")] = "alpaca",
    system: Annotated[Optional[str], typer.Option("--system", help="System message for --template chat.")] = None,
    rank: Annotated[Optional[int], typer.Option("--rank", help="Adapter rank (method default).")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Adapter alpha (method default).")] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Adapter dropout (method default).")] = None,
    targets: Annotated[Optional[str], typer.Option("--targets", help="Comma-separated target modules.")] = None,
    rslora: Annotated[bool, typer.Option("--rslora", help="Scale adapters by alpha/sqrt(r).")] = False,
    test_data: Annotated[Optional[str], typer.Option("--test-data", help="Test set (file, hub id or preset).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Field preset for --data: metamathqa, gsm8k.")] = None,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field")] = None,
    response_field: Annotated[Optional[str], typer.Option("--response-field")] = None,
    train_size: Annotated[Optional[int], typer.Option("--train-size", help="Training rows (first k).")] = None,
    eval_size: Annotated[Optional[int], typer.Option("--eval-size", help="Rows per monitored split (paper: 1319).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model folder's own code (transformers' auto_map); needed again on --resume.")] = False,
    evaluate: Annotated[bool, typer.Option("--eval", help="Evaluate each checkpoint in-process (hf backend).")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="For --eval generation.")] = 256,
    adaptive: Annotated[bool, typer.Option("--adaptive", help="For --eval: generate each checkpoint only as far as its verdict needs, while its weights are in memory (overmem eval --adaptive completes the rest later).")] = False,
    stop_at: Annotated[Optional[str], typer.Option("--stop-at", help=H("stop_at") + " Needs an evaluator: --eval, or overmem eval RUN --follow beside it. Default: the run's on --resume, else none.")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help=H("patience") + f" Default: the run's on --resume, else {D('patience')}.")] = None,
) -> None:
    """Finetune a model, saving a checkpoint per epoch into an overmem run directory."""
    from dataclasses import replace

    from overmem_tui.options import csv_list
    from overmem_tui.progress import TrainDisplay
    from overmem.training.config import TrainConfig
    from overmem.training.trainer import train as run_training
    from overmem.rundir import RunDir

    stopping = {k: v for k, v in (("stop_at", stop_at), ("patience", patience)) if v is not None}
    if resume:
        cfg = TrainConfig.from_run(RunDir(out).read_info(), str(out), trust_remote_code)
        cfg = replace(cfg, **stopping).validate()
    else:
        if not model or not data:
            from overmem.errors import UsageError

            raise UsageError("--model and --data are required (unless --resume)")
        from overmem.data.template import PromptFormat
        from overmem.training.setup import DataOptions, build_config

        cfg = build_config(
            model=model, out=str(out), method=method, loss=loss, r=rank, alpha=alpha, dropout=dropout,
            targets=csv_list(targets) or None, use_rslora=rslora, trust_remote_code=trust_remote_code, seed=seed,
            data=DataOptions(data, test_data, preset, prompt_field, response_field, train_size, eval_size),
            eval_options={"max_new_tokens": max_new_tokens, "adaptive": adaptive} if evaluate else {},
            template=PromptFormat.parse(template, system).to_json(),
            lr=lr, epochs=epochs, batch_size=batch_size, micro_batch_size=micro_batch_size, max_len=max_len,
            save_every=save_every, schedule=schedule, warmup_steps=warmup_steps, weight_decay=weight_decay,
            adam_eps=adam_eps, max_grad_norm=max_grad_norm, log_every=log_every, pad_multiple=pad_multiple,
            precision=precision, gradient_checkpointing=gradient_checkpointing, fsdp=fsdp, **stopping,
        )
    if dry_run:
        _print_plan(cfg, gpus, gpu_mem, cfg.fsdp)
        return
    after = None
    if evaluate or cfg.eval:
        from overmem.evaluation.inprocess import EvaluateAfterCheckpoint

        after = EvaluateAfterCheckpoint()
    import os

    with TrainDisplay() as display:
        path = run_training(cfg, resume=resume, on_event=display, after_checkpoint=after)
    from overmem_tui.signals import committed

    committed()
    if os.environ.get("RANK", "0") == "0":  # under torchrun/accelerate, rank 0 speaks
        typer.echo(f"run: {path}")


def _print_plan(cfg, gpus: int | None, gpu_mem: float | None, fsdp: bool) -> None:
    """The memory plan of ``cfg``; UsageError naming the cheapest fix when it does not fit."""
    from overmem.errors import UsageError
    from overmem.training.memory import Setup, cheapest_fix, describe, plan, read_shape
    from overmem.training.finetuning import get_finetuning_method

    shape = read_shape(_config_folder(cfg.base))
    detected_gpus, detected_mem = _gpus()
    setup = Setup(method="full" if get_finetuning_method(cfg.method.name).kind == "full" else "adapter",
                  gpus=gpus or detected_gpus, gpu_mem_gb=gpu_mem or detected_mem, fsdp=fsdp,
                  checkpointing=cfg.gradient_checkpointing, micro_batch=cfg.micro_batch_size, seq_len=cfg.max_len,
                  lora_r=cfg.method.r or 64, lora_targets=tuple(cfg.method.targets))
    result = plan(shape, setup)
    for line in describe(result):
        typer.echo(line)
    if not result.fits:
        fix = cheapest_fix(shape, setup)
        raise UsageError(f"the plan needs {result.total_gb:.1f} GB per GPU, more than {setup.gpu_mem_gb:g} GB; "
                         + (f"the cheapest change that fits: {fix}" if fix else "no single change makes it fit"))


def _config_folder(base: dict) -> str:
    """A folder holding the base's config.json (the hub's cached copy for hub ids)."""
    from pathlib import Path

    if base.get("path") and Path(base["path"]).is_dir():
        return base["path"]
    from huggingface_hub import hf_hub_download

    from overmem.errors import ModelError

    try:
        return str(Path(hf_hub_download(base["id"], "config.json")).parent)
    except Exception as exc:  # offline or gated: say so in one line
        raise ModelError(f"cannot get {base['id']}'s config.json: {exc}".split("\n")[0]) from exc


def _gpus() -> tuple[int, float]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory / 1024**3
    return 1, 80.0


def register(app: typer.Typer) -> None:
    app.command()(train)
