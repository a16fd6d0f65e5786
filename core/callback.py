"""OvermemCallback: make any transformers.Trainer (or TRL) run an overmem run directory.

Add it to your Trainer; it writes run.json, a checkpoint record for every save
(the model files are hard-linked, or copied, from the Trainer's checkpoint-N
folder; optimizer state stays behind), the training loss and learning rate, the
Trainer's own eval numbers under their own names, and, when splits are given,
overmem's perplexity and generation accuracy of each saved checkpoint.

    from overmem.callback import OvermemCallback
    trainer = Trainer(..., callbacks=[OvermemCallback("runs/my-run", tokenizer=tok,
                                                      splits={"val": val_rows, "test": test_rows})])

Several processes (DDP, FSDP, DeepSpeed): only the main process writes and evaluates,
on the checkpoint it saved (a fresh model from disk, never the sharded live one);
the other processes wait for it by polling its claim file, not in a collective,
so no NCCL timeout fires however long the evaluation takes, and they stop waiting
with an error if its heartbeat stops. With ``stop_at`` (and for a stop asked from
watch) the main process decides at each save as overmem's trainer does
(overmem.training.early_stop) and every process stops at that same save.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from overmem.data.template import PromptFormat
from overmem.rundir import CheckpointInfo, RunDir, RunInfo, TrainLog
from overmem.rundir.checkpoint import is_adapter
from overmem.rundir.claims import CLAIM_TIMEOUT, is_stale
from overmem.rundir.hf_trainer import parse_eval_entry, trainer_metrics
from overmem.rundir.records import KIND_ADAPTER, KIND_FULL, STATUS_FAILED, STATUS_FINISHED, STATUS_RUNNING, STATUS_STOPPED
from overmem.stopping import DEFAULT_PATIENCE, check_stop_rule

MODEL_FILES = ("adapter_model.safetensors", "adapter_config.json", "config.json", "generation_config.json",
               "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")
WAIT_POLL = 2.0
logger = logging.getLogger("overmem")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _from_main(reason: str | None) -> str | None:
    """Rank 0's decision, on every process of a distributed run (one broadcast at the same save on
    all of them); the decision itself where there is no process group."""
    try:
        import torch.distributed as dist
    except ImportError:
        return reason
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return reason
    box = [reason]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _rows_file(rundir: RunDir, split: str, rows: list[dict], answer_format: str) -> dict:
    """Write a split's rows into the run so overmem eval can rebuild it later."""
    from overmem.data.loaders import DataSource, SplitSpec

    path = rundir.write_data(split, [{"query": r["query"], "response": r["response"]} for r in rows])
    return SplitSpec(DataSource("file", str(path), answer_format=answer_format)).to_json()


class OvermemCallback(TrainerCallback):
    def __init__(self, run_dir: str | os.PathLike, *, tokenizer=None, splits: dict[str, list[dict]] | None = None,
                 template: str | dict = "alpaca", system: str | None = None, max_new_tokens: int = 256,
                 batch_size: int = 16, answer_format: str = "auto", base_model: str | None = None,
                 stop_at: str = "none", patience: int = DEFAULT_PATIENCE):
        """``splits``: name -> rows {"query", "response"}; ``template``: alpaca | chat | raw | a
        template file, or a PromptFormat's JSON form; the same rendering as overmem eval's.
        ``stop_at="purple"``: stop the training once ``patience`` evaluated checkpoints in a row
        are over-memorized (overmem.stopping), at a save, never before the checkpoint to keep."""
        check_stop_rule(stop_at, patience)
        self.stop_at = stop_at
        self.patience = patience
        self.stopped: str | None = None  # why this callback stopped the training
        self.rundir = RunDir(run_dir)
        self.tokenizer = tokenizer
        self.splits = splits or {}
        fmt = template if isinstance(template, dict) else None
        self.template = PromptFormat.from_json(fmt) if fmt else PromptFormat.parse(template, system)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.answer_format = answer_format
        self.base_model = base_model
        self._evaluator = None
        self._early_stop = None

    # -- helpers -----------------------------------------------------------------
    def _base(self, model) -> dict:
        ref = self.base_model
        if ref is None:
            peft = getattr(model, "peft_config", None)
            if peft:
                ref = next(iter(peft.values())).base_model_name_or_path
            else:
                ref = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None) \
                    or "unknown"
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
        if not state.is_world_process_zero:
            return
        if self.rundir.exists():  # resumed: it trains again (a stopped run too, on purpose)
            self.rundir.set_status(STATUS_RUNNING)
            return
        data = {"splits": {name: _rows_file(self.rundir, name, rows, self.answer_format)
                           for name, rows in self.splits.items()},
                "answer": {"formats": [], "fallback": False}}
        self.rundir.create(RunInfo(
            status=STATUS_RUNNING,
            base_model=self._base(model),
            method={"name": "adapter" if getattr(model, "peft_config", None) else "full"},
            loss="trainer",
            hyperparameters={"lr": args.learning_rate, "epochs": args.num_train_epochs,
                             "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
                             * max(1, args.world_size), "max_steps": state.max_steps},
            data=data,
            prompt_template=self.template.to_json(),
            seed=args.seed,
            notes=(f"written by OvermemCallback from {args.output_dir}",),
        ))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self.rundir.exists():
            return
        now = time.time()
        records: list = []
        if "loss" in logs:
            records.append(TrainLog(step=state.global_step, epoch=float(state.epoch or 0.0), loss=float(logs["loss"]),
                                    lr=float(logs.get("learning_rate") or 0.0), total_steps=state.max_steps,
                                    time=now))
        name = self._name(args, state)  # the same name its checkpoint gets
        records += trainer_metrics([(name, split, key, value) for split, key, value in parse_eval_entry(logs)], now)
        self.rundir.append(records)

    def on_save(self, args, state, control, model=None, **kwargs):
        name = self._name(args, state)
        if state.is_world_process_zero:
            self._save(name, args, state, model)
        else:
            self._wait_for_main(name)
        reason = _from_main(self._decide(name, state) if state.is_world_process_zero else None)
        if reason:  # every process stops at this same step: none is left waiting in a collective
            self.stopped = reason
            control.should_training_stop = True
            state.log_history.append({"overmem_stop": reason, "checkpoint": name, "step": state.global_step})
            logger.warning("overmem: stopping the training after %s: %s", name, reason)

    def _decide(self, name: str, state) -> str | None:
        """The main process: whether the training stops after checkpoint ``name`` (the stop rule,
        or a request from watch), decided and recorded as overmem's own trainer does."""
        if not self.rundir.exists():
            return None
        from overmem.training.early_stop import EarlyStop

        if self._early_stop is None:
            self._early_stop = EarlyStop(self.rundir, self.stop_at, self.patience,
                                         lambda text: logger.warning("overmem: %s", text))
        return self._early_stop.after(name, state.global_step)

    def _save(self, name: str, args, state, model) -> None:
        if not self.rundir.exists():
            return
        source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        info = CheckpointInfo(name, KIND_ADAPTER if is_adapter(source) else KIND_FULL,
                              epoch=float(state.epoch or 0.0), step=state.global_step,
                              extra={"trainer_checkpoint": str(source)})
        with self.rundir.stage_checkpoint(info, force=True) as folder:
            for f in MODEL_FILES:
                if (source / f).is_file():
                    _link_or_copy(source / f, folder / f)
            for shard in source.glob("model-*.safetensors"):
                _link_or_copy(shard, folder / shard.name)
        if self.splits and self.tokenizer is not None and model is not None:
            self._evaluate(name, model, args)

    def _evaluate(self, name: str, model, args) -> None:
        """Evaluate the saved checkpoint ``name``. One process: one evaluator of the live model
        serves every save (one run context, rows read once). Several: the live model may be
        sharded, so a fresh evaluator loads the saved checkpoint, holding a claim whose heartbeat
        tells the waiting processes that this one lives, and is dropped after it (the copy of
        the base it loaded must not stay in memory beside the training)."""
        from overmem.evaluation.options import EvalOptions

        options = EvalOptions(splits=tuple(self.splits), max_new_tokens=self.max_new_tokens,
                              batch_size=self.batch_size, backend="hf")
        if max(1, args.world_size) > 1:
            from overmem.evaluation.runner import Evaluator

            evaluator = Evaluator(self.rundir.path, options)
            try:
                evaluator.evaluate_one(name)
            finally:
                evaluator.close()
            return
        if self._evaluator is None:
            from overmem.evaluation.inprocess import live_evaluator

            device = str(next(model.parameters()).device)
            self._evaluator = live_evaluator(self.rundir.path, model, self.tokenizer, device, options)
        try:
            self._evaluator.evaluate_one(name)
        finally:
            model.train()

    def _wait_for_main(self, name: str) -> None:
        """Other processes: wait until the main process has evaluated ``name`` (no collective)."""
        if not self.splits or self.tokenizer is None:
            return
        claim = self.rundir.claim_path(name)
        deadline = time.time() + 60  # the main process claims the checkpoint right after saving it
        while not claim.exists() and not self._evaluated(name) and time.time() < deadline:
            time.sleep(WAIT_POLL)
        while claim.exists():
            if is_stale(claim, CLAIM_TIMEOUT):
                from overmem.errors import OvermemError

                raise OvermemError(f"the main process stopped evaluating {name} (its claim went stale)")
            time.sleep(WAIT_POLL)

    def _evaluated(self, name: str) -> bool:
        from overmem.rundir import load_run

        return any(m.checkpoint == name and m.aggregate == "mean" for m in load_run(self.rundir.path).metrics) \
            if self.rundir.exists() else False

    def on_train_end(self, args, state, control, **kwargs):
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None
        if state.is_world_process_zero and self.rundir.exists():
            done = STATUS_STOPPED if self.stopped else STATUS_FINISHED
            self.rundir.set_status(done if self.stopped or state.global_step >= state.max_steps else STATUS_FAILED)

