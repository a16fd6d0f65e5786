"""OvermemCallback: make any transformers.Trainer (or TRL) run an overmem run directory.

Add it to your Trainer; it writes run.json, a checkpoint record for every save
(the model files are hard-linked, or copied, from the Trainer's checkpoint-N
folder; optimizer state stays behind), the training loss and learning rate, the
Trainer's own eval numbers under their own names, and, when splits are given,
overmem's perplexity and generation accuracy of each saved checkpoint.

    from overmem.callback import OvermemCallback
    trainer = SFTTrainer(..., args=SFTConfig(..., report_to=["tensorboard"]),
                         callbacks=[OvermemCallback("runs/my-run", tokenizer=tok,
                                                    splits={"val": val_rows, "test": test_rows})])

A split's rows take every shape ``overmem eval --split-file`` reads (overmem.data.layouts):
TRL's conversational ``messages`` (the last assistant turn is the reference), TRL's
``prompt``/``completion`` (text or turns), or ``query``/``response`` fields; a list of
dicts or a datasets.Dataset. They are kept as given in the run (data/<split>.jsonl) and
read back through the same loader as a --split-file, so the two evaluate the same pairs.

Each evaluated checkpoint's results also reach the loggers the Trainer reports to
(``report_to``: TensorBoard, W&B, MLflow ...), at the checkpoint's step, as
``overmem/<split>/ppl`` and ``overmem/<split>/acc`` (the mean values recorded in
metrics.jsonl) and ``overmem/<split>/phase``: the phase overmem recommend gives that
checkpoint from the run's records so far on that split (a later checkpoint can move the
best, and with it an earlier phase), as a number: its index in overmem.phases.Phase, 0 black
(under-trained), 1 yellow (healthy), 2 purple (over-memorized), 3 overfit, 4 unknown.
The integrations name every key that is not an ``eval_`` one as training data, so
TensorBoard and W&B show them as ``train/overmem/<split>/...``. The entry is added to
the Trainer's log_history too (so the trainer_state.json of the next checkpoint, and
save_state's, hold it). Only the main process logs them (it evaluates); in a loop of
your own, with no Trainer calling the callback, they stay in metrics.jsonl, as one
warning says.

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
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler

from overmem.data.layouts import detect_layout, normalize_record
from overmem.data.template import PromptFormat
from overmem.errors import DataError, OvermemError
from overmem.phases import Phase
from overmem.rundir import CheckpointInfo, RunDir, RunInfo, TrainLog
from overmem.rundir.checkpoint import is_adapter
from overmem.rundir.claims import CLAIM_TIMEOUT, is_stale
from overmem.rundir.hf_trainer import parse_eval_entry, trainer_metrics
from overmem.rundir.lines import EVAL_METRICS, MEAN, ordered_splits
from overmem.rundir.records import KIND_ADAPTER, KIND_FULL, STATUS_FAILED, STATUS_FINISHED, STATUS_RUNNING, STATUS_STOPPED
from overmem.stopping import DEFAULT_PATIENCE, check_stop_rule

MODEL_FILES = ("adapter_model.safetensors", "adapter_config.json", "config.json", "generation_config.json",
               "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")
WAIT_POLL = 2.0
LOG_PREFIX = "overmem/"  # the keys this callback logs to the Trainer's loggers: overmem/<split>/<name>
PHASE_CODES = {phase: i for i, phase in enumerate(Phase)}  # overmem/<split>/phase: black 0 ... unknown 4
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


def _split_rows(name: str, rows) -> list[dict]:
    """A split's rows as a list of dicts (from a list, a datasets.Dataset, any iterable of
    mappings); DataError naming the split for anything else."""
    if isinstance(rows, (str, bytes, Mapping)):
        raise DataError(f"OvermemCallback split {name!r}: give its rows as a list of records or a datasets.Dataset, "
                        f"not a {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"OvermemCallback split {name!r} row {i} is a {type(row).__name__}, not a record")
        out.append(dict(row))
    if not out:
        raise DataError(f"OvermemCallback split {name!r} has no rows")
    return out


def _check_rows(name: str, rows: list[dict], answer_format: str) -> str:
    """The layout of a split's rows, found and checked row by row as ``overmem eval --split-file``
    reads a file (overmem.data.layouts); DataError naming the split, the row and what is
    missing otherwise. A column a row lacks reads as None, as the file's loader fills it."""
    from overmem.data.loaders import DataSource

    source = DataSource("file", f"OvermemCallback split {name!r}", answer_format=answer_format)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    layout = detect_layout(source, columns)
    for i, row in enumerate(rows):
        normalize_record(source, layout, {c: row.get(c) for c in columns}, f"{source.ref} row {i}")
    return layout


def _rows_file(rundir: RunDir, split: str, rows: list[dict], layout: str, answer_format: str):
    """Write a split's rows into the run as given (data/<split>.jsonl) and return the SplitSpec that
    reads them back through the --split-file loader; loaded once now, so a file the loader cannot
    read stops the training before its first step, not at its first save."""
    from overmem.data.loaders import DataSource, SplitSpec, load_rows

    try:
        path = rundir.write_data(split, rows)
    except (TypeError, ValueError) as exc:  # json.dumps: a value that is not JSON data
        raise DataError(f"OvermemCallback split {split!r}: its rows must hold JSON data ({exc})") from exc
    spec = SplitSpec(DataSource("file", str(path), answer_format=answer_format, layout=layout))
    load_rows(spec.source, 0, 1)
    return spec


class OvermemCallback(TrainerCallback):
    def __init__(self, run_dir: str | os.PathLike, *, tokenizer=None, splits: dict | None = None,
                 template: str | dict | None = None, system: str | None = None, max_new_tokens: int = 256,
                 batch_size: int = 16, answer_format: str = "auto", base_model: str | None = None,
                 stop_at: str = "none", patience: int = DEFAULT_PATIENCE, adaptive: bool = False):
        """``splits``: name -> rows, in any shape ``overmem eval --split-file`` reads (see the module
        doc), checked here: DataError naming the split and what its rows lack. ``template``:
        alpaca | chat | raw | a template file, or a PromptFormat's JSON form; None: as overmem
        eval picks for a --split-file (chat turns through the tokenizer's chat template,
        prompt/completion text as is, fields through Alpaca); the same rendering as overmem
        eval's. ``stop_at="purple"``: stop the training once ``patience`` evaluated checkpoints
        in a row are over-memorized (overmem.stopping), at a save, never before the checkpoint
        to keep. ``adaptive``: generate each save's rows only as far as its verdict needs
        (overmem.adaptive), while its weights are in memory."""
        check_stop_rule(stop_at, patience)
        self.stop_at = stop_at
        self.patience = patience
        self.stopped: str | None = None  # why this callback stopped the training
        self.rundir = RunDir(run_dir)
        self.tokenizer = tokenizer
        self.splits = {name: _split_rows(name, rows) for name, rows in (splits or {}).items()}
        self._layouts = {name: _check_rows(name, rows, answer_format) for name, rows in self.splits.items()}
        fmt = template if isinstance(template, dict) else None
        self.template = PromptFormat.from_json(fmt) if fmt else \
            PromptFormat.parse(template, system) if template is not None else None  # None: decided by the rows
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.adaptive = adaptive
        self.answer_format = answer_format
        self.base_model = base_model
        self._evaluator = None
        self._early_stop = None
        self._said_no_trainer = False
        self._said_no_phase = False
        self._said_full = False

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
        specs = {name: _rows_file(self.rundir, name, rows, self._layouts[name], self.answer_format)
                 for name, rows in self.splits.items()}
        data = {"splits": {name: spec.to_json() for name, spec in specs.items()},
                "answer": {"formats": [], "fallback": False}}
        template = self._prompt_format(specs)
        self.rundir.create(RunInfo(
            status=STATUS_RUNNING,
            base_model=self._base(model),
            method={"name": "adapter" if getattr(model, "peft_config", None) else "full"},
            loss="trainer",
            hyperparameters={"lr": args.learning_rate, "epochs": args.num_train_epochs,
                             "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
                             * max(1, args.world_size), "max_steps": state.max_steps},
            data=data,
            prompt_template=template.to_json(),
            seed=args.seed,
            notes=(f"written by OvermemCallback from {args.output_dir}",),
        ))

    def _prompt_format(self, specs: dict) -> PromptFormat:
        """The run's prompt format: the one given, else the one overmem eval picks for these splits
        as --split-file data (overmem.evaluation.definitions.default_format); DataError when it
        is the chat template and the tokenizer has none (here, not at the first save)."""
        from overmem.evaluation.definitions import default_format

        fmt = self.template
        if fmt is None:
            fmt = default_format(specs)
            if self.system and fmt.kind == "chat":
                fmt = replace(fmt, system=self.system)
        if fmt.kind == "chat" and self.tokenizer is not None and not getattr(self.tokenizer, "chat_template", None):
            raise DataError("OvermemCallback: the splits are rendered with the tokenizer's chat template (their "
                            "queries are chat turns, or template='chat'), and this tokenizer has none: set "
                            "tokenizer.chat_template or give template='alpaca', 'raw' or a template file")
        return fmt

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self.rundir.exists():
            return
        if any(str(key).startswith(LOG_PREFIX) for key in logs):  # our own results, reported in on_save
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
        if state.is_world_process_zero:
            control = self._report(name, args, state, control)
        reason = _from_main(self._decide(name, state) if state.is_world_process_zero else None)
        if reason:  # every process stops at this same step: none is left waiting in a collective
            self.stopped = reason
            control.should_training_stop = True
            state.log_history.append({"overmem_stop": reason, "checkpoint": name, "step": state.global_step})
            logger.warning("overmem: stopping the training after %s: %s", name, reason)
        return control

    # -- the Trainer's loggers -------------------------------------------------------
    def _report(self, name: str, args, state, control):
        """The main process: hand checkpoint ``name``'s results (``_results``) to the other
        callbacks' on_log, as Trainer.log does, at the current step (the checkpoint's), and
        add them to state.log_history; returns the control the callbacks hand back. Without a
        Trainer calling (a custom loop) nothing is logged, and that is said once."""
        logs = self._results(name) if self.splits and self.rundir.exists() else {}
        if not logs:
            return control
        handler = self._calling_handler()
        if handler is None:
            if not self._said_no_trainer:
                self._said_no_trainer = True
                logger.warning("overmem: no transformers Trainer is calling OvermemCallback, so its results "
                               "reach no report_to logger; they are in %s", self.rundir.metrics)
            return control
        # not Trainer.log: TRL's SFTTrainer.log adds (and clears) its averaged training metrics
        state.log_history.append({**logs, "epoch": state.epoch, "step": state.global_step})
        return handler.on_log(args, state, control, dict(logs)) or control

    def _calling_handler(self) -> CallbackHandler | None:
        """The CallbackHandler that is calling this callback now, or None.

        transformers hands a callback neither its Trainer nor the Trainer's CallbackHandler,
        and the loggers of ``report_to`` (TensorBoardCallback, WandbCallback ...) are other
        callbacks, reached only through that handler's on_log. The handler's call_event is
        on the stack whenever a Trainer calls us, so the calling frames are searched for a
        ``self`` that is a CallbackHandler holding this very callback."""
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, CallbackHandler) and any(cb is self for cb in owner.callbacks):
                return owner
            frame = frame.f_back
        return None

    def _results(self, name: str) -> dict[str, float | int]:
        """``overmem/<split>/ppl``, ``/acc`` (the mean values of checkpoint ``name`` as recorded in
        metrics.jsonl) and ``/phase`` (PHASE_CODES of its phase, as overmem recommend classifies
        the run's records so far on that split), for every split it was evaluated on."""
        from overmem.rundir import load_run
        from overmem.summary import summarize

        run = load_run(self.rundir.path)
        values = {(m.split, m.metric): m.value for m in run.metrics
                  if m.checkpoint == name and m.probe is None and m.aggregate == MEAN and m.metric in EVAL_METRICS}
        logs: dict[str, float | int] = {}
        for split in ordered_splits({split for split, _ in values}):
            logs.update({f"{LOG_PREFIX}{split}/{metric}": values[(split, metric)] for metric in EVAL_METRICS
                         if (split, metric) in values})
            try:
                verdict = summarize(run, split).advice.phases.of(name)
            except OvermemError as exc:  # a run the decision cannot read: the numbers still go out
                if not self._said_no_phase:
                    self._said_no_phase = True
                    logger.warning("overmem: no phase to report (%s); ppl and acc are reported", exc)
                verdict = None
            if verdict is not None:
                logs[f"{LOG_PREFIX}{split}/phase"] = PHASE_CODES[verdict.phase]
        return logs

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

        several = max(1, args.world_size) > 1
        if several and self.adaptive and not self._said_full:
            # the other processes wait for this checkpoint's claim and records, which an adaptive
            # evaluation releases and writes between its looks
            logger.warning("overmem: OvermemCallback(adaptive=True) evaluates in full when training runs in "
                           "several processes")
            self._said_full = True
        options = EvalOptions(splits=tuple(self.splits), max_new_tokens=self.max_new_tokens,
                              batch_size=self.batch_size, backend="hf", adaptive=self.adaptive and not several)
        if several:
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

