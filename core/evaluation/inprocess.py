"""Evaluation of a model that is in memory (training's --eval, OvermemCallback)."""

from __future__ import annotations

from contextlib import contextmanager

from overmem.evaluation.runner import EvalOptions, Evaluator


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


def evaluate_live(run_path, model, tokenizer, device: str, checkpoint: str, options: EvalOptions,
                  on_event=None) -> None:
    evaluator = Evaluator(run_path, EvalOptions(**{**options.__dict__, "checkpoints": (checkpoint,),
                                                   "backend": "hf"}),
                          models=LiveModels(model, tokenizer, device), on_event=on_event)
    evaluator.evaluate_pending()


def evaluate_after_checkpoint(training, name: str) -> None:
    """Training hook: evaluate the just-saved checkpoint with the live model (hf backend)."""
    opts = training.cfg.eval or {}
    options = EvalOptions(max_new_tokens=int(opts.get("max_new_tokens", 256)),
                          batch_size=int(opts.get("batch_size", 16)),
                          limit=opts.get("limit"))
    evaluate_live(training.rundir.path, training.model, training.tokenizer, training.dist.device, name, options)
