"""What a checkpoint folder holds, decided once: the base, a PEFT adapter, or a full model.

Every part that loads, serves, merges or copies a checkpoint asks here; the
adapter's ``adapter_config.json`` is parsed here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

from overmem.rundir.io import load_json
from overmem.errors import CorruptFile, ModelError, OvermemError
from overmem.rundir.fields import finite, shown
from overmem.rundir.records import KIND_BASE, CheckpointInfo

FORMAT_BASE, FORMAT_ADAPTER, FORMAT_FULL = "base", "adapter", "full"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"


def folder_format(path: Path) -> str:
    """adapter or full, for a folder (ModelError when it holds neither)."""
    if (path / ADAPTER_CONFIG).is_file():
        return FORMAT_ADAPTER
    if (path / MODEL_CONFIG).is_file():
        return FORMAT_FULL
    raise ModelError(f"{path} holds neither an adapter ({ADAPTER_CONFIG}) nor a model ({MODEL_CONFIG})")


def checkpoint_format(ckpt: CheckpointInfo) -> str:
    if ckpt.kind == KIND_BASE:
        return FORMAT_BASE
    if ckpt.path is None:
        raise ModelError(f"checkpoint {ckpt.name} has no folder (only metrics)")
    return folder_format(ckpt.path)


def is_adapter(path: Path | None) -> bool:
    return path is not None and (path / ADAPTER_CONFIG).is_file()


def adapter_config(path: Path) -> dict:
    """The adapter's config (ModelError, one line, when it cannot be read)."""
    try:
        obj = load_json(path / ADAPTER_CONFIG)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / ADAPTER_CONFIG}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelError(f"{path / ADAPTER_CONFIG} is not a JSON object")
    problem = _adapter_problem(obj)
    if problem:
        raise CorruptFile(f"{path / ADAPTER_CONFIG}: {problem}")
    return obj


def _adapter_problem(obj: dict) -> str | None:
    """Why an adapter config is no LoRA overmem can load and merge exactly, or None."""
    peft_type = obj.get("peft_type", "LORA")
    if peft_type != "LORA":
        return f"peft_type {shown(peft_type)} is not LORA (overmem merges and serves LoRA-family adapters)"
    checks = [
        ("r", obj.get("r", 8), lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 2**20),
        ("lora_alpha", obj.get("lora_alpha", 8), lambda v: finite(v) and v > 0),
        ("lora_dropout", obj.get("lora_dropout", 0.0), lambda v: finite(v) and 0 <= v < 1),
        ("use_rslora", obj.get("use_rslora", False), lambda v: isinstance(v, bool)),
        ("base_model_name_or_path", obj.get("base_model_name_or_path"), lambda v: v is None or isinstance(v, str)),
        ("target_modules", obj.get("target_modules"),
         lambda v: v is None or isinstance(v, str) or isinstance(v, list) and all(isinstance(t, str) for t in v)),
    ]
    for key, value, ok in checks:
        if not ok(value):
            return f"{key} {shown(value)} is not what a LoRA config holds there"
    return None


def adapter_base(path: Path) -> str | None:
    """The base model an adapter names (a hub id or a path), or None."""
    try:
        ref = adapter_config(path).get("base_model_name_or_path")
    except OvermemError:
        return None
    return ref if isinstance(ref, str) and ref else None


def adapter_ranks(checkpoints) -> list[int]:
    """The LoRA ranks of the adapter checkpoints among ``checkpoints`` (unreadable ones skipped)."""
    ranks = []
    for ckpt in checkpoints:
        if is_adapter(ckpt.path):
            try:
                ranks.append(int(adapter_config(ckpt.path).get("r", 8)))
            except (OvermemError, TypeError, ValueError):
                continue
    return ranks
