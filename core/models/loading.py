"""Loading base models and tokenizers: presets, local folders, GGUF files, hub ids.

A run records its base as ``{"id", "path", "gguf_file", "trust_remote_code"}`` so
every later command loads exactly the same weights.
"""

from __future__ import annotations

from pathlib import Path

from overmem.errors import ModelError, UsageError

PRESETS = {"tiny": "the shipped ~0.7M-parameter Llama pretrained on synthetic-math's distribution"}


def resolve_base(model: str, trust_remote_code: bool = False) -> dict:
    """The base-model record of run.json for a --model value."""
    if model == "tiny":
        from overmem.models.tiny import TINY_DIR

        if not (TINY_DIR / "config.json").is_file():
            raise ModelError(f"the tiny preset is missing from {TINY_DIR} (run scripts/pretrain_tiny.py)")
        return {"id": "tiny", "path": str(TINY_DIR), "gguf_file": None, "trust_remote_code": False}
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return {"id": str(path.resolve()), "path": str(path.resolve().parent), "gguf_file": path.name,
                "trust_remote_code": trust_remote_code}
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a transformers model folder")
        return {"id": str(path.resolve()), "path": str(path.resolve()), "gguf_file": None,
                "trust_remote_code": trust_remote_code}
    if model.startswith((".", "/", "~")):
        raise ModelError(f"{model}: no such model folder or file")
    return {"id": model, "path": None, "gguf_file": None, "trust_remote_code": trust_remote_code}


def allow_remote_code(base: dict, allowed: bool) -> dict:
    """The base record to load with, given whether this invocation says --trust-remote-code.

    A run directory is someone else's file: that it recorded ``trust_remote_code`` never
    makes overmem import code from a model folder. Such a run needs the flag on every command
    that loads its model (UsageError naming it otherwise); with the flag, code runs because
    this command said so.
    """
    if base.get("trust_remote_code") and not allowed:
        raise UsageError(f"the run's base model {base.get('id') or base.get('path')} runs its own code (its run "
                         "records trust_remote_code); overmem imports code from a model folder only when the command "
                         "says so: add --trust-remote-code if you trust that folder")
    return {**base, "trust_remote_code": bool(allowed)}


def quiet_transformers() -> None:
    """No per-load progress bars: overmem loads a model per checkpoint and draws its own progress."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _ref(base: dict) -> str:
    return base.get("path") or base["id"]


def load_tokenizer(base: dict):
    """The run's tokenizer: the one its trainer saved (``base["tokenizer"]``, e.g. with the chat
    template it trained with), else the base model's."""
    from transformers import AutoTokenizer

    saved = base.get("tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(
            saved or _ref(base), gguf_file=None if saved else base.get("gguf_file"),
            trust_remote_code=bool(base.get("trust_remote_code"))
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {base['id']}: {exc}".split("\n")[0]) from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_config(base: dict):
    """The base model's config (no weights), or None when it cannot be read (a model without one)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(_ref(base), gguf_file=base.get("gguf_file"),
                                          trust_remote_code=bool(base.get("trust_remote_code")))
    except (OSError, ValueError):
        return None


def load_model(base: dict, dtype=None, device: str | None = None):
    """The base causal LM, dequantized when it comes from GGUF."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            _ref(base),
            gguf_file=base.get("gguf_file"),
            dtype=dtype or torch.float32,
            trust_remote_code=bool(base.get("trust_remote_code")),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {base['id']}: {exc}".split("\n")[0]) from exc
    if getattr(model, "hf_quantizer", None) is not None:
        # GGUF weights arrive dequantized, but the quantizer record makes Trainer and
        # save_pretrained refuse the model; drop it.
        model.hf_quantizer.remove_quantization_config(model)
    if device:
        model.to(device)
    return model


def check_device(device: str | None, count: int = 1, label: str | None = None) -> None:
    """UsageError, before any model loads, for a device this machine does not have: cpu, or
    cuda[:N] with N below the number of GPUs this process sees (``count`` of them from N on)."""
    if device is None or device == "cpu":
        return
    index = device[5:] if device.startswith("cuda:") else ("0" if device == "cuda" else None)
    if index is None or not index.isdigit():
        raise UsageError(f"--device takes cpu or cuda:N, got {device!r}")
    import torch

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(index) + count > seen:
        raise UsageError(f"--device {label or device}: this process sees {seen} CUDA GPU(s)" +
                         ("" if seen else " (no CUDA here: use --device cpu or leave it out)"))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """bf16 on GPUs that support it, float32 on CPU (exact and fast enough there)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
