"""Read a Hugging Face Trainer output folder as a (read-only) run.

A Trainer writes ``checkpoint-N/`` folders, each with a ``trainer_state.json``
whose ``log_history`` holds every logged training and evaluation entry; a
``trainer_state.json`` at the top exists only when someone called ``save_state``.
Evaluation losses become perplexities exp(loss) (token-weighted, the Trainer's
own mean over label tokens); any accuracy-like key becomes accuracy.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from overmem.rundir.records import (
    KIND_ADAPTER,
    KIND_FULL,
    STATUS_FINISHED,
    STATUS_RUNNING,
    CheckpointInfo,
    Metric,
    RunInfo,
    TrainLog,
)

STATE = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
# Preference when one split has several accuracy-like keys.
_ACC_NAMES = ("accuracy", "exact_match", "acc")
_SKIP_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def checkpoint_folders(path: Path) -> dict[int, Path]:
    out = {}
    if not path.is_dir():
        return out
    for child in path.iterdir():
        m = _CKPT.match(child.name)
        if m and child.is_dir():
            out[int(m.group(1))] = child
    return out


def state_file(path: Path) -> Path | None:
    """The top trainer_state.json, else the newest checkpoint's."""
    top = path / STATE
    if top.is_file():
        return top
    folders = checkpoint_folders(path)
    for step in sorted(folders, reverse=True):
        candidate = folders[step] / STATE
        if candidate.is_file():
            return candidate
    return None


def is_trainer_folder(path: Path) -> bool:
    return state_file(path) is not None


@dataclass(frozen=True)
class TrainerRun:
    info: RunInfo
    checkpoints: tuple[CheckpointInfo, ...]
    metrics: tuple[Metric, ...]
    train_logs: tuple[TrainLog, ...]
    problems: tuple[str, ...]


def _as_fraction(value: float) -> float:
    """Accuracy logged as a percentage (0-100) becomes a fraction."""
    return value / 100.0 if value > 1.0 else value


def parse_eval_entry(entry: dict) -> list[tuple[str, str, float]]:
    """(split, metric, value) triples of one log_history eval entry.

    ``eval_loss`` -> split ``val``; ``eval_<split>_loss`` -> ``<split>``. An
    accuracy key belongs to the longest known split it starts with, else to val
    (so TRL's ``eval_mean_token_accuracy`` is val accuracy, not a split named
    "mean_token").
    """
    keys = {k[5:]: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    splits = {"val"}
    out: list[tuple[str, str, float]] = []
    for key, value in keys.items():
        if key == "loss":
            out.append(("val", "loss", float(value)))
        elif key.endswith("_loss"):
            split = key[: -len("_loss")]
            splits.add(split)
            out.append((split, "loss", float(value)))
    best: dict[str, tuple[int, float]] = {}
    for key, value in keys.items():
        if key.endswith(_SKIP_SUFFIXES) or not any(name in key for name in _ACC_NAMES):
            continue
        split = "val"
        for candidate in sorted(splits, key=len, reverse=True):
            if candidate != "val" and key.startswith(candidate + "_"):
                split = candidate
                break
        rest = key[len(split) + 1 :] if key.startswith(split + "_") and split != "val" else key
        rank = next((i for i, name in enumerate(_ACC_NAMES) if rest == name), len(_ACC_NAMES))
        if split not in best or rank < best[split][0]:
            best[split] = (rank, _as_fraction(float(value)))
    out.extend((split, "acc", value) for split, (_, value) in best.items())
    return out


def _base_model(path: Path, folders: dict[int, Path]) -> dict:
    for folder in [folders[s] for s in sorted(folders, reverse=True)] + [path]:
        adapter = folder / "adapter_config.json"
        config = folder / "config.json"
        try:
            if adapter.is_file():
                ref = json.loads(adapter.read_text()).get("base_model_name_or_path")
                if ref:
                    return {"id": ref, "path": None}
            if config.is_file():
                ref = json.loads(config.read_text()).get("_name_or_path")
                if ref:
                    return {"id": ref, "path": None}
        except (OSError, ValueError):
            continue
    return {"id": "unknown", "path": None}


def read_trainer_folder(path: Path) -> TrainerRun:
    """Parse a Trainer output folder. Raises OSError/ValueError on an unreadable state file."""
    folders = checkpoint_folders(path)
    source = state_file(path)
    state = json.loads(source.read_text()) if source else {}
    history = state.get("log_history") or []
    problems: list[str] = []
    logs: list[TrainLog] = []
    metrics: list[Metric] = []
    eval_epochs: dict[int, float] = {}
    max_steps = state.get("max_steps") or None
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            problems.append(f"{source.name}: log_history[{i}] is not an object")
            continue
        step = int(entry.get("step", 0))
        epoch = float(entry.get("epoch") or 0.0)
        if "loss" in entry and isinstance(entry["loss"], (int, float)):
            logs.append(
                TrainLog(
                    step=step,
                    epoch=epoch,
                    loss=float(entry["loss"]),
                    lr=float(entry.get("learning_rate") or 0.0),
                    total_steps=max_steps,
                )
            )
        triples = parse_eval_entry(entry)
        if not triples:
            continue
        name = f"step{step}"
        eval_epochs[step] = epoch
        for split, metric, value in triples:
            if metric == "loss":
                ppl = math.exp(value) if value < 700 else math.inf
                metrics.append(Metric(name, split, "ppl", ppl, aggregate="token"))
            else:
                metrics.append(Metric(name, split, "acc", value, aggregate="mean"))
    is_adapter = any((f / "adapter_config.json").is_file() for f in folders.values())
    kind = KIND_ADAPTER if is_adapter else KIND_FULL
    checkpoints = []
    for step in sorted(set(folders) | set(eval_epochs)):
        epoch = eval_epochs.get(step)
        if epoch is None:
            earlier = [e.epoch for e in logs if e.step <= step]
            epoch = max(earlier) if earlier else None
        checkpoints.append(
            CheckpointInfo(name=f"step{step}", kind=kind, epoch=epoch, step=step, path=folders.get(step))
        )
    global_step = int(state.get("global_step") or 0)
    finished = bool(max_steps) and global_step >= int(max_steps)
    info = RunInfo(
        status=STATUS_FINISHED if finished else STATUS_RUNNING,
        base_model=_base_model(path, folders),
        method={"name": "adapter" if is_adapter else "full"},
        hyperparameters={
            k: state[k] for k in ("max_steps", "num_train_epochs", "train_batch_size") if k in state
        },
        notes=(f"read from {source.relative_to(path) if source else 'no trainer_state.json'}",),
    )
    return TrainerRun(info, tuple(checkpoints), tuple(metrics), tuple(logs), tuple(problems))
