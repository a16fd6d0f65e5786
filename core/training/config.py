"""The training configuration: a documented dataclass written into run.json.

A run reproduces from its own folder: ``overmem train --resume --out RUN`` rebuilds
this config from run.json and continues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from overmem.data.template import PROMPT_TEMPLATE
from overmem.errors import UsageError
from overmem.params import require
from overmem.stopping import DEFAULT_PATIENCE, STOP_AT
from overmem.training.finetuning import MethodConfig

SCHEDULES = ("linear", "constant", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


def hyper(default, help: str, option: str | None = None, *, low: float | None = None, low_open: bool = False,
          high: float | None = None, choices: tuple[str, ...] = ()):
    """A hyperparameter: a TrainConfig field that run.json records, resume restores and the
    CLI offers as an option (its default, help and valid range come from here)."""
    return field(default=default, metadata={"hyper": True, "help": help, "option": option, "low": low,
                                            "low_open": low_open, "high": high, "choices": choices})


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
    lr: float = hyper(2e-4, "Peak learning rate.", low=0, low_open=True)
    epochs: int = hyper(10, "Epochs (a checkpoint each).", low=1, high=100_000)
    batch_size: int = hyper(128, "Effective batch (gradient accumulation).", low=1)
    micro_batch_size: int = hyper(8, "Examples per forward pass per process.", low=1)
    max_len: int = hyper(1024, "Truncate prompt+response to this many tokens.", low=8)
    save_every: str = hyper("epoch", "'epoch' or a step count.")
    warmup_steps: int = hyper(100, "Warmup steps (Table 6: 100), clipped to 10% of all steps.", low=0)
    schedule: str = hyper("linear", "linear (Table 6), constant or cosine.", choices=SCHEDULES)
    weight_decay: float = hyper(0.0, "AdamW weight decay.", low=0)
    adam_eps: float = hyper(1e-8, "AdamW epsilon.", low=0, low_open=True)
    max_grad_norm: float = hyper(1.0, "Gradient clipping norm (0: none).", low=0)
    log_every: int = hyper(5, "Steps between training-loss records.", low=1)
    pad_multiple: int = hyper(16, "Pad batches to a multiple of this many tokens.", low=1)
    precision: str = hyper("auto", "Frozen base weights and compute: auto (bf16 on GPUs that have it), bf16, fp32.",
                           choices=PRECISIONS)
    gradient_checkpointing: bool = hyper(False, "Recompute activations in the backward pass (less memory, ~30% "
                                         "more compute, the same gradients).")
    fsdp: bool = hyper(False, "Shard parameters, gradients and optimizer state over the processes (FSDP2 "
                       "fully_shard, under torchrun or accelerate launch).")
    seed: int = 0
    template: str | dict = PROMPT_TEMPLATE  # the run's PromptFormat (JSON form)
    stop_at: str = hyper("none", "Stop at the next checkpoint once --patience evaluated checkpoints in a row are "
                         "purple (purple: purple or overfit; overfit: overfit only); none: train every epoch.",
                         choices=STOP_AT)
    patience: int = hyper(DEFAULT_PATIENCE, "Evaluated checkpoints in a row in the --stop-at phase before training stops.", low=1)
    eval: dict = field(default_factory=dict)  # options for in-process evaluation (--eval)

    def validate(self) -> "TrainConfig":
        """UsageError for the first value out of its declared range (a resumed run's run.json
        is checked the same way as the command line)."""
        for f in fields(self):
            if f.metadata.get("hyper") and f.name != "save_every":
                m = f.metadata
                require("--" + f.name.replace("_", "-"), getattr(self, f.name), type(f.default), low=m["low"],
                        low_open=m["low_open"], high=m["high"], choices=m["choices"])
        if not (self.save_every == "epoch" or str(self.save_every).isdigit() and int(self.save_every) > 0):
            raise UsageError(f"--save-every must be 'epoch' or a positive step count, got {self.save_every!r}")
        require("--seed", self.seed, int)
        self.method.validate()
        return self

    @property
    def save_steps(self) -> int | None:
        return None if self.save_every == "epoch" else int(self.save_every)

    def hyperparameters(self) -> dict:
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    @classmethod
    def from_run(cls, info, out: str, trust_remote_code: bool = False) -> "TrainConfig":
        """Rebuild the config a run was started with (for --resume); the run's record never
        decides to run a model folder's code, ``trust_remote_code`` (this invocation's) does."""
        from overmem.models.loading import allow_remote_code

        hp = {k: v for k, v in info.hyperparameters.items() if k in HYPERPARAMETERS}
        known = {f.name for f in fields(MethodConfig)}
        targets = info.method.get("targets") or ()
        method = MethodConfig(**{**{k: v for k, v in info.method.items() if k in known},
                                 "targets": tuple(targets) if isinstance(targets, (list, tuple)) else (targets,)})
        return cls(out=out, base=allow_remote_code(info.base_model, trust_remote_code), method=method,
                   data=info.data, loss=info.loss,
                   seed=info.seed, template=info.prompt_template or PROMPT_TEMPLATE,
                   eval=dict(info.data.get("eval") or {}) if isinstance(info.data.get("eval") or {}, dict) else {},
                   **hp)

    def to_json(self) -> dict:
        out = asdict(self)
        out["method"] = self.method.to_json()
        return out


HYPERPARAMETERS = tuple(f.name for f in fields(TrainConfig) if f.metadata.get("hyper"))


def hyper_default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def hyper_help(name: str) -> str:
    return TrainConfig.__dataclass_fields__[name].metadata["help"]
