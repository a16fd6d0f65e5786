"""What a checkpoint folder holds, decided once: the base, a PEFT adapter, or a full model.

Every part that loads, serves, merges or copies a checkpoint asks here; the
adapter's ``adapter_config.json`` is parsed here and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

from overmem.errors import ModelError
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
        obj = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / ADAPTER_CONFIG}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelError(f"{path / ADAPTER_CONFIG} is not a JSON object")
    return obj


def adapter_base(path: Path) -> str | None:
    """The base model an adapter names (a hub id or a path), or None."""
    try:
        ref = adapter_config(path).get("base_model_name_or_path")
    except ModelError:
        return None
    return ref if isinstance(ref, str) and ref else None


def adapter_ranks(checkpoints) -> list[int]:
    """The LoRA ranks of the adapter checkpoints among ``checkpoints`` (unreadable ones skipped)."""
    ranks = []
    for ckpt in checkpoints:
        if is_adapter(ckpt.path):
            try:
                ranks.append(int(adapter_config(ckpt.path).get("r", 8)))
            except (ModelError, TypeError, ValueError):
                continue
    return ranks
