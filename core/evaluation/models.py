"""Which model a checkpoint is, and loading it for the HF backend (base loaded once)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from overmem.errors import ModelError
from overmem.rundir.records import KIND_BASE, CheckpointInfo

FORMAT_BASE, FORMAT_ADAPTER, FORMAT_FULL = "base", "adapter", "full"


def checkpoint_format(ckpt: CheckpointInfo) -> str:
    if ckpt.kind == KIND_BASE:
        return FORMAT_BASE
    if ckpt.path is None:
        raise ModelError(f"checkpoint {ckpt.name} has no folder (only metrics)")
    if (ckpt.path / "adapter_config.json").is_file():
        return FORMAT_ADAPTER
    if (ckpt.path / "config.json").is_file():
        return FORMAT_FULL
    raise ModelError(f"{ckpt.path} holds neither an adapter (adapter_config.json) nor a model (config.json)")


def adapter_config(path: Path) -> dict:
    try:
        return json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}/adapter_config.json: {exc}") from exc


class HFModels:
    """Hands out the model of each checkpoint; the base is loaded once and adapters
    are attached to it and removed again (unload, no merge: the base stays exact)."""

    def __init__(self, base: dict, device: str | None = None, dtype=None) -> None:
        from overmem.models.loading import default_device, default_dtype

        self.base_ref = base
        self.device = device or default_device()
        self.dtype = dtype or default_dtype(self.device)
        self._base = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from overmem.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.base_ref)
        return self._tokenizer

    def base(self):
        if self._base is None:
            from overmem.models.loading import load_model

            self._base = load_model(self.base_ref, dtype=self.dtype, device=self.device)
            self._base.eval()
        return self._base

    @contextmanager
    def use(self, ckpt: CheckpointInfo):
        fmt = checkpoint_format(ckpt)
        if fmt == FORMAT_BASE:
            yield self.base()
        elif fmt == FORMAT_ADAPTER:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(self.base(), str(ckpt.path), is_trainable=False)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelError(f"cannot load adapter {ckpt.path}: {exc}".split("\n")[0]) from exc
            model.eval()
            try:
                yield model
            finally:
                self._base = model.unload()
        else:
            from transformers import AutoModelForCausalLM

            from overmem.models.loading import quiet_transformers

            quiet_transformers()
            try:
                model = AutoModelForCausalLM.from_pretrained(str(ckpt.path), dtype=self.dtype).to(self.device)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load {ckpt.path}: {exc}".split("\n")[0]) from exc
            model.eval()
            try:
                yield model
            finally:
                del model
