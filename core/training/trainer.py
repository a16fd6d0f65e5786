"""The training loop: epochs of shuffled effective batches, a checkpoint per epoch.

One global batch of ``batch_size`` examples is one optimizer step. Each process
takes every world-th example of it and runs micro-batches with gradient
accumulation; every loss is a sum over response tokens divided by the response
tokens of the WHOLE global batch (times world size, since DDP averages), so one
process and several compute the same update.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from overmem.data.encoding import collate, training_examples
from overmem.data.loaders import SplitSpec, select
from overmem.errors import UsageError
from overmem.rundir import BASE_CHECKPOINT, CheckpointInfo, RunDir, RunInfo, TrainLog
from overmem.progress import TRAIN, Event, Finished, Listener, Note, Saved, Started, Stepped
from overmem.rundir.lines import Resumed
from overmem.rundir.records import KIND_ADAPTER, KIND_FULL, STATUS_FAILED, STATUS_FINISHED, STATUS_RUNNING
from overmem.training import sharding
from overmem.training.early_stop import EarlyStop
from overmem.training import resume as resume_state
from overmem.training.config import TrainConfig
from overmem.training.distributed import Dist, close_dist, init_dist
from overmem.training.ownership import clean_after_crash, take_run
from overmem.training.losses import get_loss
from overmem.training.schedule import effective_warmup, epoch_order, lr_factor
from overmem.training.finetuning import adapter_tensors, apply_method, describe, get_finetuning_method, save_adapter, trainable_state


class Training:
    """One training run; ``run()`` trains to the end (or resumes and does)."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False,
                 on_event: Listener | None = None,
                 after_checkpoint: Callable[["Training", str], None] | None = None,
                 on_step: Callable[[int], None] | None = None) -> None:
        self.cfg = cfg.validate()
        self.resume = resume
        self.on_event = on_event
        self.after_checkpoint = after_checkpoint
        self.on_step = on_step
        self.rundir = RunDir(cfg.out)
        if cfg.fsdp and (after_checkpoint or cfg.eval):
            raise UsageError("--eval evaluates the live model, which --fsdp shards: evaluate beside the training "
                             "with overmem eval RUN --follow (on its own device: --device cuda:N)")
        self.method = get_finetuning_method(cfg.method.name)
        self.early_stop = EarlyStop(self.rundir, cfg.stop_at, cfg.patience, self.note)
        self.loss_fn = get_loss(cfg.loss).fn
        self.dist: Dist = Dist()
        self.notes: list[str] = []
        self.started = False  # this process has changed the run (created or resumed it)

    # -- events ----------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self.dist.main and self.on_event:
            self.on_event(event)

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.emit(Note(TRAIN, text=text))

    # -- setup -----------------------------------------------------------------
    def _setup(self) -> None:
        import torch

        from overmem.models.loading import default_dtype, load_model, load_tokenizer

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.base)
        self.examples, notes = training_examples(self.tokenizer, select(SplitSpec.from_json(cfg.data["fit"])),
                                                 cfg.template, cfg.max_len)
        for text in notes:
            self.note(text)
        device = self.dist.device
        adapter = self.method.kind == "adapter"
        # frozen base weights may be bf16 on GPU; trained weights stay float32 (autocast computes in bf16)
        low = {"auto": default_dtype(device), "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.precision]
        dtype = low if adapter else torch.float32
        self.autocast_dtype = low
        model = load_model(cfg.base, dtype=dtype, device=device)
        model.config.use_cache = False
        if cfg.gradient_checkpointing:
            # non-reentrant: works with frozen inputs (adapters) and keeps the RNG of dropout
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        initial = resume_state.saved_initial(self.rundir, self.resume and self.method.svd_init)
        self.model = apply_method(model, cfg.method, initial=initial)
        self.initial = adapter_tensors(self.model) if self.method.svd_init else None
        if cfg.fsdp:
            sharding.shard(self.model, low)  # before the optimizer: it steps the shards
        n, b = len(self.examples), cfg.batch_size
        self.steps_per_epoch = math.ceil(n / b)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup = effective_warmup(cfg.warmup_steps, self.total_steps)
        if self.warmup < cfg.warmup_steps:
            self.note(f"warmup clipped from {cfg.warmup_steps} to {self.warmup} steps (10% of "
                      f"{self.total_steps} steps)")
        if b < self.dist.world:
            raise UsageError(f"--batch-size {b} is smaller than the {self.dist.world} processes")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(cfg.schedule, s, self.warmup, self.total_steps)
        )

    def _create_run(self) -> None:
        cfg = self.cfg
        hp = {**cfg.hyperparameters(), "effective_warmup_steps": self.warmup, "total_steps": self.total_steps,
              "world_size": self.dist.world}
        info = RunInfo(
            status=STATUS_RUNNING,
            base_model=cfg.base,
            method=cfg.method.to_json(),
            loss=cfg.loss,
            hyperparameters=hp,
            data={**cfg.data, "eval": cfg.eval},
            prompt_template=cfg.template,
            seed=cfg.seed,
            notes=tuple(self.notes),
        )
        self.rundir.create(info)
        if self.initial is not None:
            init = self.rundir.within(self.rundir.init_adapter)
            self.model.save_pretrained(str(init), selected_adapters=["default"])

    # -- steps -------------------------------------------------------------------
    def _forward_backward(self, ddp, batch: list[int]) -> tuple[float, int]:
        import torch

        cfg, d = self.cfg, self.dist
        total_tokens = sum(self.examples[i].n_response for i in batch)
        mine = batch[d.rank :: d.world]
        micro = [mine[j : j + cfg.micro_batch_size] for j in range(0, len(mine), cfg.micro_batch_size)]
        local, tokens = 0.0, 0
        cuda = d.device.startswith("cuda")
        for j, part in enumerate(micro):
            sync = j == len(micro) - 1
            if cfg.fsdp:
                sharding.set_gradient_sync(ddp, sync)
            ctx = ddp.no_sync() if d.enabled and not cfg.fsdp and not sync else nullcontext()
            ids, mask, labels = collate([self.examples[i] for i in part], self.tokenizer.pad_token_id,
                                        cfg.pad_multiple)
            ids, mask, labels = ids.to(d.device), mask.to(d.device), labels.to(d.device)
            with ctx:
                low = self.autocast_dtype != torch.float32
                amp = torch.autocast("cuda", dtype=self.autocast_dtype) if cuda and low else nullcontext()
                with amp:
                    logits = ddp(input_ids=ids, attention_mask=mask).logits
                loss = self.loss_fn(logits, labels)
                (loss * (d.world / total_tokens)).backward()
            local += float(loss.detach())
            tokens += int(mask.sum())
        return d.sum(local) / total_tokens, int(d.sum(tokens))

    def _save(self, name: str, epoch: float, global_step: int, step_in_epoch: int, epoch_index: int) -> bool:
        """Save checkpoint ``name`` (and the resume state), evaluate it in process if asked;
        True when training stops here (every process agrees)."""
        d, rd = self.dist, self.rundir
        kind = KIND_ADAPTER if self.method.kind == "adapter" else KIND_FULL
        extra = {"method": self.cfg.method.name, "loss": self.cfg.loss}
        if self.initial is not None:
            extra.update(converted_from=self.cfg.method.name, init_adapter="init_adapter")
        info = CheckpointInfo(name, kind, epoch=epoch, step=global_step, extra=extra)
        staging = resume_state.staging_dir(rd.within(rd.state), global_step)
        # sharded (FSDP): every process takes part in gathering the full states
        full = sharding.full_model_state(self.model) if self.cfg.fsdp else None
        optim = sharding.full_optimizer_state(self.model, self.optimizer) if self.cfg.fsdp else None
        if d.main:
            # force: a killed run may have left this checkpoint without its state
            with rd.stage_checkpoint(info, force=self.resume) as folder:
                if kind == KIND_ADAPTER:
                    save_adapter(self.model, self.cfg.method, folder, self.initial, state_dict=full)
                else:
                    self.model.save_pretrained(str(folder), state_dict=full)
                    self.tokenizer.save_pretrained(str(folder))
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        d.barrier()
        resume_state.save_rng(staging, d.rank)
        if d.main:
            progress = resume_state.Progress(epoch_index, step_in_epoch, global_step, name)
            resume_state.save_main(staging, trainable_state(self.model, full), optim or self.optimizer,
                                   self.scheduler, progress)
        d.barrier()
        if d.main:
            resume_state.publish(rd.state, staging)
            self.emit(Saved(TRAIN, name, step=global_step, epoch=epoch))
        self._after_checkpoint(name)
        reason = self.early_stop.after(name, global_step) if d.main else None
        if reason:
            self.note(f"stopped after {name}: {reason}")
        return d.any(bool(reason))

    def _after_checkpoint(self, name: str) -> None:
        import torch

        if self.dist.main and self.after_checkpoint:
            # in-process evaluation must not move the RNG that drives dropout
            with torch.random.fork_rng(devices=[]):
                self.after_checkpoint(self, name)
            self.model.train()
        self.dist.barrier()

    # -- main --------------------------------------------------------------------
    def run(self) -> Path:
        self.dist = init_dist(group=self.cfg.fsdp)
        finished = False
        try:  # the main process holds the run's training lease throughout (ownership.py)
            lease = take_run(self.rundir, self.resume) if self.dist.main else None
            with lease.heartbeat() if lease is not None else nullcontext():
                try:
                    self._setup()
                    path = self._train()
                    finished = True
                    return path
                except BaseException:
                    if self.dist.main and self.started:  # a refused start leaves the run as it was
                        self.rundir.set_status(STATUS_FAILED)
                    raise
        finally:
            close_dist(self.dist, finished)

    def _train(self) -> Path:
        import torch

        cfg, d, rd = self.cfg, self.dist, self.rundir
        start_epoch, skip, global_step = 0, 0, 0
        if self.resume:
            progress = resume_state.resume(rd, self.model, self.optimizer, self.scheduler, d.rank, sharded=cfg.fsdp,
                                           steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs)
            start_epoch, skip, global_step = progress.epoch, progress.step_in_epoch, progress.global_step
            if d.main:
                rd.set_status(STATUS_RUNNING)
                self.started = True
                rd.append([Resumed(global_step, progress.checkpoint, time.time())])
                clean_after_crash(rd, self.note)
            self.note(f"resumed from {progress.checkpoint} (step {global_step})")
        elif d.main:
            self._create_run()
            self.started = True
        d.barrier()
        ddp = self.model
        if d.enabled and not cfg.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(self.model, device_ids=[d.local_rank] if d.device != "cpu" else None)
        if not self.resume:
            # the base model is epoch 0: curves start where finetuning starts
            self._after_checkpoint(BASE_CHECKPOINT)
        self.model.train()
        if cfg.stop_at != "none" and self.after_checkpoint is None:
            self.note(f"--stop-at {cfg.stop_at}: stops on the evaluations recorded in the run; evaluate beside it "
                      f"with overmem eval {rd.path} --follow (or train with --eval)")
        self.emit(Started(TRAIN, done=global_step, total=self.total_steps,
                          text=f"{describe(cfg.method)} loss={cfg.loss} examples={len(self.examples)} "
                                  f"processes={d.world}"))
        window_loss, window_tokens, window_start, window_steps = 0.0, 0, time.time(), 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        n = len(self.examples)
        for epoch in range(start_epoch, cfg.epochs):
            order = epoch_order(n, cfg.seed, epoch)
            batches = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
            for k in range(skip if epoch == start_epoch else 0, len(batches)):
                loss, tokens = self._forward_backward(ddp, batches[k])
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                global_step += 1
                window_loss += loss
                window_tokens += tokens
                window_steps += 1
                epoch_pos = epoch + (k + 1) / len(batches)
                if global_step % cfg.log_every == 0 or k == len(batches) - 1:
                    rate = window_tokens / max(time.time() - window_start, 1e-9)
                    record = TrainLog(step=global_step, epoch=round(epoch_pos, 4), loss=window_loss / window_steps,
                                      lr=lr, total_steps=self.total_steps, tokens_per_s=rate, time=time.time())
                    if d.main:
                        rd.append([record])
                    self.emit(Stepped(TRAIN, done=global_step, total=self.total_steps, epoch=epoch_pos,
                                      loss=record.loss, lr=lr, tokens_per_s=rate))
                    window_loss, window_tokens, window_start, window_steps = 0.0, 0, time.time(), 0
                last_in_epoch = k == len(batches) - 1
                stop = False
                if cfg.save_steps and global_step % cfg.save_steps == 0 and not last_in_epoch:
                    stop = self._save(f"step{global_step}", round(epoch_pos, 4), global_step, k + 1, epoch)
                if last_in_epoch:
                    stop = self._save(f"ep{epoch + 1}", float(epoch + 1), global_step, 0, epoch + 1)
                if self.on_step:
                    self.on_step(global_step)
                if stop:
                    self.emit(Finished(TRAIN, done=global_step, total=self.total_steps))
                    return rd.path  # the status says stopped, and the Stop record why
        if d.main:
            rd.set_status(STATUS_FINISHED)
        self.emit(Finished(TRAIN, done=global_step, total=self.total_steps))
        return rd.path


def train(cfg: TrainConfig, **kwargs) -> Path:
    """Train (or resume with ``resume=True``) and return the run directory."""
    return Training(cfg, **kwargs).run()
