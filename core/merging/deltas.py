"""The exact delta of each kind of checkpoint, per base weight, on demand.

- full: theta_k - theta_base, tensor by tensor;
- LoRA: scale * B @ A per adapted weight (scale alpha/r, or alpha/sqrt(r) with rsLoRA).
  PiSSA/MiLoRA checkpoints written by overmem are already LoRAs of rank 2r on the
  original base, [B, -B0] @ [A; A0], so their delta is s(B A - B0 A0) exactly;
- the base (epoch 0): zero.
Averaging A and B separately (PEFT's "linear" combination) is NOT the average of
the deltas; nothing here does that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from overmem.errors import MergeError
from overmem.merging.safetensors_io import TensorReader
from overmem.rundir.checkpoint import adapter_config

PEFT_PREFIX = "base_model.model."
RAW_SVD_INITS = ("pissa", "olora", "corda", "loftq")


def base_weight_name(peft_key: str) -> tuple[str, str] | None:
    """'base_model.model.X.q_proj.lora_A.weight' -> ('X.q_proj.weight', 'A')."""
    if not peft_key.startswith(PEFT_PREFIX):
        return None
    rest = peft_key[len(PEFT_PREFIX) :]
    for part in ("A", "B"):
        marker = f".lora_{part}.weight"
        if rest.endswith(marker):
            return rest[: -len(marker)] + ".weight", part
    return None


class Delta(ABC):
    """A checkpoint's delta for each base weight name (None: zero)."""

    label: str

    @abstractmethod
    def __call__(self, name: str):
        """The float32 delta of base weight ``name``, or None where this checkpoint left it alone."""

    def names(self) -> set[str]:
        return set()


class ZeroDelta(Delta):
    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, name: str):
        return None


class FullDelta(Delta):
    def __init__(self, label: str, folder: Path, base: TensorReader) -> None:
        self.label = label
        self.reader = TensorReader(folder)
        self.base = base
        mine, theirs = set(self.reader.names()), set(base.names())
        if mine != theirs:
            extra, missing = sorted(mine - theirs)[:3], sorted(theirs - mine)[:3]
            raise MergeError(f"{label}: tensor names differ from the base (extra {extra}, missing {missing})")
        for name in mine:
            if self.reader.tensors[name].shape != base.tensors[name].shape:
                raise MergeError(f"{label}: {name} has shape {self.reader.tensors[name].shape}, the base "
                                 f"{base.tensors[name].shape}")

    def __call__(self, name: str):
        import torch

        return self.reader.get(name).to(torch.float32) - self.base.get(name).to(torch.float32)

    def names(self) -> set[str]:
        return set(self.reader.names())


@dataclass(frozen=True)
class LoraModule:
    A: str  # key of lora_A in the adapter file
    B: str


class LoraDelta(Delta):
    def __init__(self, label: str, folder: Path, base: TensorReader) -> None:
        self.label = label
        self.config = adapter_config(folder)
        init = self.config.get("init_lora_weights")
        if isinstance(init, str) and init.lower().startswith(RAW_SVD_INITS):
            raise MergeError(f"{label}: a raw {init} adapter is relative to a modified base; its delta needs the "
                             "initial adapter (overmem train saves such checkpoints converted)")
        if self.config.get("modules_to_save"):
            raise MergeError(f"{label}: adapters with modules_to_save are not supported")
        if self.config.get("use_dora"):
            raise MergeError(f"{label}: DoRA adapters are not a weight delta B@A")
        r, alpha = int(self.config.get("r", 8)), float(self.config.get("lora_alpha", 8))  # PEFT's defaults
        self.scale = alpha / (r**0.5) if self.config.get("use_rslora") else alpha / r
        if self.config.get("rank_pattern") or self.config.get("alpha_pattern"):
            raise MergeError(f"{label}: adapters with rank_pattern/alpha_pattern are not supported")
        self.reader = TensorReader(folder, "adapter_model.safetensors")
        modules: dict[str, dict] = {}
        for key in self.reader.names():
            parsed = base_weight_name(key)
            if parsed is None:
                raise MergeError(f"{label}: unexpected tensor {key} in the adapter")
            modules.setdefault(parsed[0], {})[parsed[1]] = key
        self.modules: dict[str, LoraModule] = {}
        for name, parts in modules.items():
            if set(parts) != {"A", "B"}:
                raise MergeError(f"{label}: {name} has lora_{'A' if 'A' in parts else 'B'} only")
            if name not in base.tensors:
                raise MergeError(f"{label}: adapts {name}, which the base model does not have")
            a, b = self.reader.tensors[parts["A"]].shape, self.reader.tensors[parts["B"]].shape
            if (b[0], a[1]) != base.tensors[name].shape or a[0] != b[1]:
                raise MergeError(f"{label}: {name} LoRA shapes {b}@{a} do not fit the base {base.tensors[name].shape}")
            self.modules[name] = LoraModule(parts["A"], parts["B"])
        self.rank = r

    def factors(self, name: str):
        """(A, B) float32 with the scale folded into B, or None."""
        import torch

        module = self.modules.get(name)
        if module is None:
            return None
        A = self.reader.get(module.A).to(torch.float32)
        B = self.reader.get(module.B).to(torch.float32) * self.scale
        return A, B

    def __call__(self, name: str):
        f = self.factors(name)
        return None if f is None else f[1] @ f[0]

    def names(self) -> set[str]:
        return set(self.modules)
