"""Writing a merge: the full model tensor by tensor, or an exact stacked LoRA adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from overmem.merging.deltas import Delta, FullDelta, LoraDelta, ZeroDelta
from overmem.merging.merge_methods import get_merge_method
from overmem.progress import MERGE, Advanced, Listener
from overmem.errors import MergeError
from overmem.rundir.checkpoint import ADAPTER_CONFIG
from overmem.merging.safetensors_io import MERGEABLE, ShardWriter, TensorReader, plan_shards, write_index

_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _copy_model_files(src: Path, dst: Path) -> None:
    """Config and tokenizer files of the base (everything but weights and indexes)."""
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(_WEIGHT_FILES) and not f.name.endswith(".index.json") \
                and not f.name.startswith((".", "adapter_")):
            shutil.copy2(f, dst / f.name)


def write_full(plan, base: TensorReader, deltas: list[Delta], folder: Path, on_event: Listener) -> None:
    """The merged model as safetensors shards beside the base's config and tokenizer files."""
    import torch

    combine = get_merge_method(plan.method).combine
    linear = plan.method == "linear"
    full_weight = sum(w for d, w in zip(deltas, plan.weights) if isinstance(d, FullDelta))
    tensors = [(n, base.tensors[n].dtype, base.tensors[n].shape) for n in base.names()]
    shards = plan_shards(tensors, plan.max_shard_bytes)
    total = sum(base.tensors[n].nbytes for n in base.names())
    many = len(shards) > 1
    files = []
    done = 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" if many else "model.safetensors"
        writer = ShardWriter(folder / file, shard)
        for name, dtype, shape in shard:
            if dtype not in MERGEABLE:  # unchanged in every input (checked before writing): carried over
                done += writer.write_raw(name, base.raw(name))
                on_event(Advanced(MERGE, name, done, total))
                continue
            original = base.get(name)
            if linear:
                # theta_base + sum w_i (theta_i - theta_base) read each input once:
                # (1 - sum of full weights) theta_base + sum w_i theta_i + sum w_j s_j B_j A_j
                merged = _linear_tensor(original, name, deltas, plan.weights, full_weight)
            else:
                delta = combine([d(name) for d in deltas], list(plan.weights), **plan.params)
                merged = original if delta is None else (original.to(torch.float32) + delta).to(original.dtype)
            _finite(merged, name)
            done += writer.write(name, merged)
            del merged, original
            on_event(Advanced(MERGE, name, done, total))
        writer.close()
        files.append((file, shard))
    if many:
        write_index(folder, files, total)
    _copy_model_files(plan.base_folder, folder)


def _linear_tensor(original, name: str, deltas: list[Delta], weights, full_weight: float):
    import torch

    acc = None
    if full_weight != 1.0:
        acc = original.to(torch.float32) * (1.0 - full_weight)
    for d, w in zip(deltas, weights):
        if w == 0 or isinstance(d, ZeroDelta):
            continue
        part = d.reader.get(name).to(torch.float32) if isinstance(d, FullDelta) else d(name)
        if part is None:
            continue
        acc = part * w if acc is None else acc.add_(part, alpha=w)
        del part
    if acc is None:  # every weight on full inputs sums to 1 and all are zero
        return torch.zeros_like(original)
    return acc.to(original.dtype)


def write_adapter(plan, base: TensorReader, deltas: list[Delta], folder: Path, on_event: Listener) -> None:
    """Stack the weighted, scaled factors: B' = [w_i s_i B_i], A' = [A_i]; scale of the output 1."""
    import torch
    from safetensors.torch import save_file

    loras = [d for d in deltas if isinstance(d, LoraDelta)]
    weights = [w for d, w in zip(deltas, plan.weights) if isinstance(d, LoraDelta)]
    names = sorted(set().union(*(d.names() for d in loras)))
    rank = sum(d.rank for d in loras)
    out: dict = {}
    for i, name in enumerate(names):
        rows, cols = base.tensors[name].shape
        As, Bs = [], []
        for d, w in zip(loras, weights):
            f = d.factors(name)
            if f is None:
                As.append(torch.zeros(d.rank, cols))
                Bs.append(torch.zeros(rows, d.rank))
            else:
                As.append(f[0])
                Bs.append(f[1] * w)
        prefix = "base_model.model." + name[: -len(".weight")]
        out[f"{prefix}.lora_A.weight"] = _finite(torch.cat(As, 0).contiguous(), name)
        out[f"{prefix}.lora_B.weight"] = _finite(torch.cat(Bs, 1).contiguous(), name)
        on_event(Advanced(MERGE, name, i + 1, len(names)))
    save_file(out, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = dict(loras[0].config)
    targets = sorted({n[: -len(".weight")].rsplit(".", 1)[-1] for n in names})
    config.update(r=rank, lora_alpha=rank, use_rslora=False, target_modules=targets, init_lora_weights=True,
                  lora_dropout=0.0, base_model_name_or_path=plan.base_ref)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))


def _finite(tensor, name: str):
    """The tensor, unless the weights or the inputs made it NaN or infinite (nothing is written then)."""
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise MergeError(f"the merged {name} is not finite (NaN or infinity): the weights or an input's values "
                         "overflow; nothing was written")
    return tensor


def check_dtypes(base: TensorReader, deltas: list[Delta]) -> None:
    """Refuse, before anything is written, what cannot be averaged exactly: a quantized
    (FP8/FP4/FP6), integer or boolean tensor that some input changed or adapts."""
    for name, info in base.tensors.items():
        if info.dtype in MERGEABLE:
            continue
        for d in deltas:
            changed = isinstance(d, FullDelta) and d.reader.raw(name) != base.raw(name)
            adapted = isinstance(d, LoraDelta) and name in d.names()
            if changed or adapted:
                raise MergeError(f"{d.label}: {name} is {info.dtype}; quantized, integer and boolean tensors "
                                 "cannot be averaged exactly (merge dequantized checkpoints)")
