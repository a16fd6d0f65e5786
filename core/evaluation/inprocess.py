"""Evaluation of a model that is in memory (training's --eval, OvermemCallback)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

from overmem.evaluation.options import EvalOptions
from overmem.evaluation.runner import Evaluator


class LiveModels:
    """Hands out one in-memory model for whichever checkpoint is being evaluated."""

    live = True

    def __init__(self, model, tokenizer, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    @contextmanager
    def use(self, ckpt):
        model = self.model
        was_cache = getattr(model.config, "use_cache", True)
        model.config.use_cache = True
        try:
            yield model
        finally:
            model.config.use_cache = was_cache


def live_evaluator(run_path, model, tokenizer, device: str, options: EvalOptions, on_event=None) -> Evaluator:
    """An evaluator of the live model (hf backend), kept for the whole training: one run
    context, its rows read once."""
    return Evaluator(run_path, replace(options, backend="hf"), models=LiveModels(model, tokenizer, device),
                     on_event=on_event)


class EvaluateAfterCheckpoint:
    """Training hook: evaluate each just-saved checkpoint with the live model."""

    def __init__(self) -> None:
        self._evaluator: Evaluator | None = None

    def __call__(self, training, name: str) -> None:
        if self._evaluator is None:
            opts = training.cfg.eval or {}
            defaults = EvalOptions()
            options = EvalOptions(max_new_tokens=int(opts.get("max_new_tokens", defaults.max_new_tokens)),
                                  batch_size=int(opts.get("batch_size", defaults.batch_size)),
                                  limit=opts.get("limit"), adaptive=opts.get("adaptive") is True)
            self._evaluator = live_evaluator(training.rundir.path, training.model, training.tokenizer,
                                             training.dist.device, options)
        self._evaluator.evaluate_one(name)
