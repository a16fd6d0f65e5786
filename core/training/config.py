"""The training configuration: a documented dataclass written into run.json.

A run reproduces from its own folder: ``overmem train --resume --out RUN`` rebuilds
this config from run.json and continues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from overmem.data.template import PROMPT_TEMPLATE
from overmem.errors import UsageError
from overmem.training.methods import MethodConfig

SCHEDULES = ("linear", "constant", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    ``batch_size`` is the effective batch (Table 6: 128), reached through
    ``micro_batch_size`` x processes x gradient accumulation. ``warmup_steps``
    (Table 6: 100) is clipped to 10% of all steps for small runs, and the
    clipping is reported. ``save_every`` is "epoch" or a step count.
    """

    out: str
    base: dict
    method: MethodConfig
    data: dict  # {"fit": SplitSpec json, "splits": {...}, "answer": {...}}
    loss: str = "sft"
    lr: float = 2e-4
    epochs: int = 10
    batch_size: int = 128
    micro_batch_size: int = 8
    max_len: int = 1024
    seed: int = 0
    save_every: str = "epoch"
    warmup_steps: int = 100
    schedule: str = "linear"
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    log_every: int = 5
    pad_multiple: int = 16
    template: str = PROMPT_TEMPLATE
    eval: dict = field(default_factory=dict)  # options for in-process evaluation (--eval)
    precision: str = "auto"  # frozen base weights and compute: bf16 on GPUs that have it (auto), or forced

    def validate(self) -> "TrainConfig":
        checks = [
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.micro_batch_size >= 1, f"--micro-batch-size must be at least 1, got {self.micro_batch_size}"),
            (self.max_len >= 8, f"--max-len must be at least 8, got {self.max_len}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
            (self.save_every == "epoch" or str(self.save_every).isdigit() and int(self.save_every) > 0,
             f"--save-every must be 'epoch' or a positive step count, got {self.save_every!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return self

    @property
    def save_steps(self) -> int | None:
        return None if self.save_every == "epoch" else int(self.save_every)

    def hyperparameters(self) -> dict:
        keys = ("lr", "epochs", "batch_size", "micro_batch_size", "max_len", "save_every", "warmup_steps",
                "schedule", "weight_decay", "adam_eps", "max_grad_norm", "log_every", "pad_multiple", "precision")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_run(cls, info, out: str) -> "TrainConfig":
        """Rebuild the config a run was started with (for --resume)."""
        hp = dict(info.hyperparameters)
        hp.pop("effective_warmup_steps", None)
        hp.pop("total_steps", None)
        hp.pop("world_size", None)
        method = MethodConfig(**{**info.method, "targets": tuple(info.method.get("targets") or ())})
        return cls(out=out, base=info.base_model, method=method, data=info.data, loss=info.loss,
                   seed=info.seed, template=info.prompt_template or PROMPT_TEMPLATE,
                   eval=dict(info.data.get("eval", {})), **hp)

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def to_json(self) -> dict:
        out = asdict(self)
        out["method"] = self.method.to_json()
        return out
