"""Which model a checkpoint is, and loading it for the HF backend (base loaded once)."""

from __future__ import annotations

from contextlib import contextmanager

from overmem.errors import ModelError
from overmem.rundir.checkpoint import FORMAT_ADAPTER, FORMAT_BASE, checkpoint_format
from overmem.rundir.records import CheckpointInfo

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
                model = AutoModelForCausalLM.from_pretrained(
                    str(ckpt.path), dtype=self.dtype,
                    trust_remote_code=bool(self.base_ref.get("trust_remote_code"))).to(self.device)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load {ckpt.path}: {exc}".split("\n")[0]) from exc
            model.eval()
            try:
                yield model
            finally:
                del model
