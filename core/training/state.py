"""Resume state: trainable weights, optimizer, scheduler, RNG and position.

Saved at every checkpoint into ``RUN/state`` (replaced atomically), so a killed
run continues from its last checkpoint to exactly the result of an uninterrupted
one: the data order of each epoch is a pure function of (seed, epoch), and the
RNG state that drives dropout is restored per process.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from overmem.rundir.io import atomic_write_json, swap_in

PROGRESS = "progress.json"


@dataclass(frozen=True)
class Progress:
    epoch: int  # completed epochs
    step_in_epoch: int  # optimizer steps done in the current epoch
    global_step: int
    checkpoint: str


def staging_dir(state_dir: Path, step: int) -> Path:
    """Where every process writes its part of the next state (the same name on all ranks)."""
    return state_dir.with_name(f".{state_dir.name}.staging-{step}")


def save_rng(folder: Path, rank: int) -> None:
    import torch

    obj = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        obj["cuda"] = torch.cuda.get_rng_state()
    torch.save(obj, folder / f"rng-rank{rank}.pt")
    atomic_write_json(folder / f"python-rng-rank{rank}.json", _python_state())


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def save_main(folder: Path, model_state: dict, optimizer, scheduler, progress: Progress) -> None:
    """``optimizer``: the optimizer, or its full state dict already gathered (FSDP)."""
    import torch
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model_state.items()}, str(folder / "trainable.safetensors"))
    torch.save(optimizer if isinstance(optimizer, dict) else optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    atomic_write_json(folder / PROGRESS, progress.__dict__)


def publish(state_dir: Path, staging: Path) -> None:
    """Swap the fully written staging folder in as the state."""
    swap_in(staging, state_dir)


def read_progress(state_dir: Path) -> Progress | None:
    try:
        obj = json.loads((state_dir / PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    return Progress(**obj)


def load(state_dir: Path, model, optimizer, scheduler, rank: int, sharded: bool = False) -> Progress:
    """Restore the state every process saved (``sharded``: into an FSDP model, from full states)."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(state_dir / "trainable.safetensors"))
    optimizer_state = torch.load(state_dir / "optimizer.pt", weights_only=True)
    if sharded:
        from overmem.training.sharding import load_full_state

        load_full_state(model, optimizer, weights, optimizer_state)
    else:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(torch.load(state_dir / "scheduler.pt", weights_only=True))
    rng_file = state_dir / f"rng-rank{rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        version, internal, gauss = json.loads((state_dir / f"python-rng-rank{rank}.json").read_text())
        random.setstate((version, tuple(internal), gauss))
    progress = read_progress(state_dir)
    assert progress is not None
    return progress
