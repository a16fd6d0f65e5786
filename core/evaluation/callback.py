"""OvermemCallback: make any transformers.Trainer (or TRL) run an overmem run directory.

Add it to your Trainer; it writes run.json, a checkpoint record for every save
(the model files are hard-linked, or copied, from the Trainer's checkpoint-N
folder; optimizer state stays behind), the training loss and learning rate, the
Trainer's own eval metrics, and, when splits are given, overmem's perplexity and
accuracy of each saved checkpoint, evaluated in-process.

    from overmem.evaluation.callback import OvermemCallback
    trainer = Trainer(..., callbacks=[OvermemCallback("runs/my-run", tokenizer=tok,
                                                      splits={"val": val_rows, "test": test_rows})])
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from overmem.data.template import PROMPT_TEMPLATE
from overmem.rundir import CheckpointInfo, Metric, RunDir, RunInfo, TrainLog
from overmem.rundir.hf_trainer import parse_eval_entry
from overmem.rundir.records import KIND_ADAPTER, KIND_FULL, STATUS_FAILED, STATUS_FINISHED, STATUS_RUNNING

MODEL_FILES = ("adapter_model.safetensors", "adapter_config.json", "config.json", "generation_config.json",
               "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _rows_file(rundir: RunDir, split: str, rows: list[dict]) -> dict:
    """Write a split's rows into the run so overmem eval can rebuild it later."""
    from overmem.data.loaders import DataSource, SplitSpec
    from overmem.rundir.io import write_jsonl_atomic

    path = rundir.path / "data" / f"{split}.jsonl"
    write_jsonl_atomic(path, [{"query": r["query"], "response": r["response"]} for r in rows])
    return SplitSpec(DataSource("file", str(path), answer_format="gsm8k")).to_json()


class OvermemCallback(TrainerCallback):
    def __init__(self, run_dir: str | os.PathLike, *, tokenizer=None, splits: dict[str, list[dict]] | None = None,
                 template: str = PROMPT_TEMPLATE, max_new_tokens: int = 256, batch_size: int = 16,
                 answer_formats: tuple[str, ...] = ("gsm8k", "metamath", "boxed"), base_model: str | None = None):
        self.rundir = RunDir(run_dir)
        self.tokenizer = tokenizer
        self.splits = splits or {}
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.answer_formats = answer_formats
        self.base_model = base_model
        self._seen_logs = 0

    # -- helpers -----------------------------------------------------------------
    def _base(self, model) -> dict:
        ref = self.base_model
        if ref is None:
            peft = getattr(model, "peft_config", None)
            if peft:
                ref = next(iter(peft.values())).base_model_name_or_path
            else:
                ref = getattr(model.config, "_name_or_path", None) or "unknown"
        local = Path(ref)
        return {"id": ref, "path": str(local.resolve()) if local.exists() else None, "gguf_file": None,
                "trust_remote_code": False}

    def _name(self, args, state) -> str:
        strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
        if strategy == "epoch" and state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6:
            return f"ep{round(state.epoch)}"
        return f"step{state.global_step}"

    # -- Trainer events ------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.rundir.exists():
            return
        data = {"splits": {name: _rows_file(self.rundir, name, rows) for name, rows in self.splits.items()},
                "answer": {"formats": list(self.answer_formats), "fallback": True}}
        self.rundir.create(RunInfo(
            status=STATUS_RUNNING,
            base_model=self._base(model),
            method={"name": "adapter" if getattr(model, "peft_config", None) else "full"},
            loss="trainer",
            hyperparameters={"lr": args.learning_rate, "epochs": args.num_train_epochs,
                             "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
                             * max(1, args.world_size), "max_steps": state.max_steps},
            data=data,
            prompt_template=self.template,
            seed=args.seed,
            notes=(f"written by OvermemCallback from {args.output_dir}",),
        ))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self.rundir.exists():
            return
        now = time.time()
        records = []
        if "loss" in logs:
            records.append(TrainLog(step=state.global_step, epoch=float(state.epoch or 0.0), loss=float(logs["loss"]),
                                    lr=float(logs.get("learning_rate") or 0.0), total_steps=state.max_steps,
                                    time=now))
        name = self._name(args, state)  # the same name its checkpoint gets
        for split, metric, value in parse_eval_entry(logs):
            if metric == "loss":
                records.append(Metric(name, split, "ppl", math.exp(value) if value < 700 else math.inf, "trainer",
                                      None, now))
            else:
                records.append(Metric(name, split, "acc", value, "trainer", None, now))
        self.rundir.append(records)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or not self.rundir.exists():
            return
        source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        name = self._name(args, state)
        adapter = (source / "adapter_config.json").is_file()
        info = CheckpointInfo(name, KIND_ADAPTER if adapter else KIND_FULL, epoch=float(state.epoch or 0.0),
                              step=state.global_step, extra={"trainer_checkpoint": str(source)})
        with self.rundir.stage_checkpoint(info, force=True) as folder:
            for f in MODEL_FILES:
                if (source / f).is_file():
                    _link_or_copy(source / f, folder / f)
            for shard in source.glob("model-*.safetensors"):
                _link_or_copy(shard, folder / shard.name)
        if self.splits and self.tokenizer is not None and model is not None:
            from overmem.evaluation.inprocess import evaluate_live
            from overmem.evaluation.runner import EvalOptions

            device = str(next(model.parameters()).device)
            options = EvalOptions(splits=tuple(self.splits), max_new_tokens=self.max_new_tokens,
                                  batch_size=self.batch_size)
            evaluate_live(self.rundir.path, model, self.tokenizer, device, name, options)
            model.train()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.rundir.exists():
            self.rundir.set_status(STATUS_FINISHED if state.global_step >= state.max_steps else STATUS_FAILED)
