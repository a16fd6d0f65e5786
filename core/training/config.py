"""The training configuration: a documented dataclass written into run.json.

A run reproduces from its own folder: ``overmem train --resume --out RUN`` rebuilds
this config from run.json and continues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from overmem.data.template import PROMPT_TEMPLATE
from overmem.errors import UsageError
from overmem.training.methods import MethodConfig

SCHEDULES = ("linear", "constant", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


def hyper(default, help: str, option: str | None = None):
    """A hyperparameter: a TrainConfig field that run.json records, resume restores and the
    CLI offers as an option (its default and help come from here)."""
    return field(default=default, metadata={"hyper": True, "help": help, "option": option})


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
    lr: float = hyper(2e-4, "Peak learning rate.")
    epochs: int = hyper(10, "Epochs (a checkpoint each).")
    batch_size: int = hyper(128, "Effective batch (gradient accumulation).")
    micro_batch_size: int = hyper(8, "Examples per forward pass per process.")
    max_len: int = hyper(1024, "Truncate prompt+response to this many tokens.")
    save_every: str = hyper("epoch", "'epoch' or a step count.")
    warmup_steps: int = hyper(100, "Warmup steps (Table 6: 100), clipped to 10% of all steps.")
    schedule: str = hyper("linear", "linear (Table 6), constant or cosine.")
    weight_decay: float = hyper(0.0, "AdamW weight decay.")
    adam_eps: float = hyper(1e-8, "AdamW epsilon.")
    max_grad_norm: float = hyper(1.0, "Gradient clipping norm (0: none).")
    log_every: int = hyper(5, "Steps between training-loss records.")
    pad_multiple: int = hyper(16, "Pad batches to a multiple of this many tokens.")
    precision: str = hyper("auto", "Frozen base weights and compute: auto (bf16 on GPUs that have it), bf16, fp32.")
    gradient_checkpointing: bool = hyper(False, "Recompute activations in the backward pass (less memory, ~30% "
                                         "more compute, the same gradients).")
    fsdp: bool = hyper(False, "Shard parameters, gradients and optimizer state over the processes (FSDP2 "
                       "fully_shard, under torchrun or accelerate launch).")
    seed: int = 0
    template: str | dict = PROMPT_TEMPLATE  # the run's PromptFormat (JSON form)
    eval: dict = field(default_factory=dict)  # options for in-process evaluation (--eval)

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
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    @classmethod
    def from_run(cls, info, out: str) -> "TrainConfig":
        """Rebuild the config a run was started with (for --resume)."""
        hp = {k: v for k, v in info.hyperparameters.items() if k in HYPERPARAMETERS}
        method = MethodConfig(**{**info.method, "targets": tuple(info.method.get("targets") or ())})
        return cls(out=out, base=info.base_model, method=method, data=info.data, loss=info.loss,
                   seed=info.seed, template=info.prompt_template or PROMPT_TEMPLATE,
                   eval=dict(info.data.get("eval", {})), **hp)

    def to_json(self) -> dict:
        out = asdict(self)
        out["method"] = self.method.to_json()
        return out


HYPERPARAMETERS = tuple(f.name for f in fields(TrainConfig) if f.metadata.get("hyper"))


def hyper_default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def hyper_help(name: str) -> str:
    return TrainConfig.__dataclass_fields__[name].metadata["help"]
