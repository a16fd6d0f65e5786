"""Resume state: trainable weights, optimizer, scheduler, RNG and position.

Saved at every checkpoint into ``RUN/state`` (replaced atomically), so a killed
run continues from its last checkpoint to exactly the result of an uninterrupted
one: the data order of each epoch is a pure function of (seed, epoch), and the
RNG state that drives dropout is restored per process.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from pathlib import Path

from overmem.errors import CorruptRun
from overmem.rundir.io import atomic_write_json, load_json, swap_in
from overmem.rundir.names import safe_name

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


def saved_initial(rundir, wanted: bool) -> dict | None:
    """On resume, PiSSA/MiLoRA's B0, A0 as the run saved them (an SVD need not repeat bit for bit)."""
    path = rundir.init_adapter / "adapter_model.safetensors"
    if not (wanted and path.is_file()):
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


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
    """The saved position, None when there is none (CorruptRun when the file is not one)."""
    path = state_dir / PROGRESS
    try:
        obj = load_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CorruptRun(f"{path}: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != {f.name for f in fields(Progress)}:
        raise CorruptRun(f"{path} is not a resume position ({', '.join(f.name for f in fields(Progress))})")
    for key in ("epoch", "step_in_epoch", "global_step"):
        if isinstance(obj[key], bool) or not isinstance(obj[key], int) or obj[key] < 0:
            raise CorruptRun(f"{path}: {key} {obj[key]!r} is not a step count")
    safe_name(obj["checkpoint"], "checkpoint name", CorruptRun)
    return Progress(**obj)


def check_progress(progress: Progress, rundir, steps_per_epoch: int, epochs: int) -> None:
    """Refuse a resume position that the run's checkpoints and schedule do not bear out: its
    checkpoint exists at its step, and (epoch, step in epoch) is that step."""
    from overmem.rundir import KIND_BASE, load_run

    where = f"{rundir.state / PROGRESS}"
    ckpt = load_run(rundir.path).checkpoint(progress.checkpoint)
    checkpoint_step = ckpt.step if ckpt is not None and ckpt.kind != KIND_BASE else None
    later = sorted(c.name for c in load_run(rundir.path).checkpoints if c.kind != KIND_BASE and c.on_trajectory
                   and c.step is not None and c.step > progress.global_step)
    if len(later) > 1:  # a crash leaves at most the one checkpoint saved just before its state
        raise CorruptRun(f"{where} is at step {progress.global_step}, but {', '.join(later)} were saved after it: "
                         "resuming would retrain and replace them")
    if checkpoint_step is None:
        raise CorruptRun(f"{where} resumes from {progress.checkpoint}, which the run does not have")
    if checkpoint_step != progress.global_step:
        raise CorruptRun(f"{where} says step {progress.global_step}, but {progress.checkpoint} was saved at step "
                         f"{checkpoint_step}")
    if not (progress.step_in_epoch < steps_per_epoch and progress.epoch <= epochs
            and progress.global_step == progress.epoch * steps_per_epoch + progress.step_in_epoch):
        raise CorruptRun(f"{where}: epoch {progress.epoch}, step {progress.step_in_epoch} of {steps_per_epoch} is "
                         f"not step {progress.global_step} of this run's {epochs} epochs")


def resume(rundir, model, optimizer, scheduler, rank: int, *, sharded: bool, steps_per_epoch: int,
           epochs: int) -> Progress:
    """Check the run's saved position against its checkpoints, then restore it."""
    from overmem.errors import UsageError

    saved = read_progress(rundir.state)
    if saved is None:
        raise UsageError(f"{rundir.path} has no saved state to resume from")
    check_progress(saved, rundir, steps_per_epoch, epochs)
    try:
        return load(rundir.state, model, optimizer, scheduler, rank, sharded=sharded)
    except Exception as exc:  # every failure here is a file of the saved state that is not what it was
        from overmem.errors import OvermemError

        if isinstance(exc, OvermemError):
            raise
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CorruptRun(f"{rundir.state}: cannot resume from the saved state ({type(exc).__name__}: {detail})") \
            from exc


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
