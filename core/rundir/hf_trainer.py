"""Read a Hugging Face Trainer output folder (transformers, TRL, axolotl, LLaMA-Factory).

A Trainer writes ``checkpoint-N/`` folders, each with a ``trainer_state.json``
whose ``log_history`` holds every logged training and evaluation entry; a
``trainer_state.json`` at the top exists only when someone called ``save_state``.
The folder's checkpoints keep their names (``checkpoint-N``). Evaluation losses
become perplexities exp(loss) with the aggregate "trainer" (a mean of per-batch
mean token losses, never mixed with overmem's own ppl); every other logged eval
number (TRL's teacher-forced ``mean_token_accuracy``, a compute_metrics accuracy,
reward accuracies) keeps its own name under ``trainer/`` and never drives phases:
overmem's accuracy is generation accuracy, which ``overmem eval`` measures.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from overmem.rundir.io import load_json
from overmem.rundir.checkpoint import adapter_base, is_adapter
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
from overmem.rundir.fields import count, finite, number, value_problem
from overmem.rundir.lines import TRAINER_METRIC
from overmem.rundir.names import is_safe_name, links_out, unsafe_reason

STATE = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
# bookkeeping, not metrics (TRL's num_tokens counts the training tokens seen so far)
_SKIP = ("runtime", "samples_per_second", "steps_per_second", "epoch", "num_tokens")
_PERCENT_LIKE = ("acc", "exact_match", "match")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def is_checkpoint_name(name: str) -> bool:
    return _CKPT.match(name) is not None


def checkpoint_folders(path: Path) -> dict[int, Path]:
    """The Trainer's checkpoint-N folders by step (a link that leads out of the folder is not one)."""
    out = {}
    if not path.is_dir():
        return out
    for child in path.iterdir():
        m = _CKPT.match(child.name)
        if m and child.is_dir() and not links_out(child, path):
            out[int(m.group(1))] = child
    return out


def outside_links(path: Path) -> list[str]:
    """Problems: checkpoint-N entries that are links out of the Trainer folder (never read)."""
    return [f"{child.name} is a link out of this Trainer folder (or a loop of links); not read"
            for child in sorted(path.iterdir()) if _CKPT.match(child.name) and links_out(child, path)]


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


def parse_eval_entry(entry: dict) -> list[tuple[str, str, float]]:
    """(split, key, value) triples of one log_history eval entry; key is "loss" or the
    metric's own name.

    ``eval_loss`` -> split ``val``; ``eval_<split>_loss`` -> ``<split>``. Any other key
    belongs to the longest known split it starts with, else to val (so TRL's
    ``eval_mean_token_accuracy`` is val's, not a split named "mean_token").
    """
    keys = {k[5:]: _as_float(v) for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))
            and not isinstance(v, bool)}
    splits: set[str] = set()  # named by an eval_<split>_loss (a dict of eval datasets; "val" too)
    out: list[tuple[str, str, float]] = []
    for key, value in keys.items():
        if key == "loss":
            out.append(("val", "loss", float(value)))
        elif key.endswith("_loss"):
            split = key[: -len("_loss")]
            splits.add(split)
            out.append((split, "loss", float(value)))
    for key, value in keys.items():
        if key == "loss" or key.endswith("_loss") or key.endswith(_SKIP):
            continue
        named = next((c for c in sorted(splits, key=len, reverse=True) if key.startswith(c + "_")), None)
        split = named or "val"
        name = key[len(named) + 1:] if named else key
        out.append((split, name, float(value)))
    return out


def _as_float(value: int | float) -> float:
    """A logged number as a float; an integer beyond the float range is infinite (a problem later)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _percent_series(triples: list[tuple[str, str, str, float]]) -> set[tuple[str, str]]:
    """(split, key) series of accuracy-like numbers logged in percent: decided once per
    series (a run whose accuracy reads 0.8 then 1.0 is not in percent)."""
    peak: dict[tuple[str, str], float] = {}
    for _, split, key, value in triples:
        if _accuracy_like(key) and finite(value):
            peak[(split, key)] = max(peak.get((split, key), value), value)
    return {series for series, top in peak.items() if top > 1.0}


def _accuracy_like(key: str) -> bool:
    return any(word in key for word in _PERCENT_LIKE)


def metric_problem(m: Metric) -> str | None:
    """Why a Trainer's number cannot be shown, or None: its loss as a perplexity, and an
    accuracy-like number (after the percent rule) as a fraction, like overmem's own."""
    if m.metric == "ppl":
        problem = value_problem("ppl", m.value)
        return f"eval loss gives ppl {m.value!r}, which {problem}" if problem else None
    name = m.metric[len(TRAINER_METRIC):]
    problem = value_problem("acc" if _accuracy_like(name) else name, m.value)
    return f"{name} {m.value!r} {problem}" if problem else None


def base_model(path: Path, folders: dict[int, Path]) -> dict:
    """The base a Trainer folder was trained from, as its adapters or configs name it, and the
    tokenizer its trainer saved (TRL saves it with its chat template in every checkpoint)."""
    ordered = [folders[s] for s in sorted(folders, reverse=True)] + [path]
    tokenizer = next((str(f) for f in ordered if (f / "tokenizer_config.json").is_file()), None)
    for folder in ordered:
        ref = adapter_base(folder) or _config_name(folder)
        if ref:
            local = Path(ref).expanduser()
            return {"id": ref, "path": str(local.resolve()) if local.is_dir() else None, "gguf_file": None,
                    "trust_remote_code": False, "tokenizer": tokenizer}
    return {"id": "unknown", "path": None, "gguf_file": None, "trust_remote_code": False, "tokenizer": tokenizer}


def _config_name(folder: Path) -> str | None:
    try:
        name = load_json(folder / "config.json").get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def _state(source: Path | None) -> dict:
    """The Trainer's state file as an object (ValueError when it is not one)."""
    if source is None:
        return {}
    state = load_json(source)
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    history = state.get("log_history")
    if history is not None and not isinstance(history, list):
        raise ValueError("log_history is not a list")
    return state


def read_trainer_folder(path: Path) -> TrainerRun:
    """Parse a Trainer output folder. Raises OSError/ValueError on an unreadable state file;
    a log entry or a value that cannot be used is a problem, not an error."""
    folders = checkpoint_folders(path)
    source = state_file(path)
    state = _state(source)
    history = state.get("log_history") or []
    problems: list[str] = outside_links(path)
    logs: list[TrainLog] = []
    triples: list[tuple[str, str, str, float]] = []
    eval_epochs: dict[int, float] = {}
    logged: dict[tuple, float] = {}  # (step, split, key) -> the value logged last
    try:
        max_steps = count(state, "max_steps") or None
    except ValueError as exc:
        problems.append(f"{source.name}: {exc}")
        max_steps = None
    for i, entry in enumerate(history):
        where = f"{source.name}: log_history[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        try:
            step = count(entry, "step", optional=False)
            epoch = number(entry, "epoch", optional=True) or 0.0
            if isinstance(entry.get("loss"), (int, float)) and not isinstance(entry.get("loss"), bool):
                logs.append(TrainLog(step=step, epoch=epoch, loss=number(entry, "loss"),
                                     lr=number(entry, "learning_rate", optional=True) or 0.0, total_steps=max_steps))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        found = []
        for split, key, value in parse_eval_entry(entry):
            if not is_safe_name(split):
                problems.append(f"{where}: eval split {split!r} {unsafe_reason(split)}; not read")
                continue
            before = logged.setdefault((step, split, key), value)
            if before != value and finite(before) and finite(value):
                problems.append(f"{where}: step {step} logged eval_{key} on {split} again with another value "
                                f"({before:.6g}, now {value:.6g}); the later counts")
            logged[(step, split, key)] = value
            found.append((split, key, value))
        if found:
            eval_epochs[step] = epoch
            triples.extend((checkpoint_name(step), split, key, value) for split, key, value in found)
    metrics = []
    for m in trainer_metrics(triples):
        problem = metric_problem(m)
        if problem:
            problems.append(f"{source.name}: step {m.checkpoint[len('checkpoint-'):]}, split {m.split}: {problem}")
        else:
            metrics.append(m)
    checkpoints = []
    for step in sorted(set(folders) | set(eval_epochs)):
        folder = folders.get(step)
        epoch = eval_epochs.get(step) if step in eval_epochs else _folder_epoch(folder)
        if epoch is None:
            earlier = [e.epoch for e in logs if e.step <= step]
            epoch = max(earlier) if earlier else None
        kind = KIND_ADAPTER if is_adapter(folder) else KIND_FULL
        checkpoints.append(CheckpointInfo(name=checkpoint_name(step), kind=kind, epoch=epoch, step=step,
                                          path=folder))
    try:
        global_step = count(state, "global_step") or 0
    except ValueError as exc:
        problems.append(f"{source.name}: {exc}")
        global_step = 0
    finished = bool(max_steps) and global_step >= int(max_steps)
    adapters = any(c.kind == KIND_ADAPTER for c in checkpoints)
    info = RunInfo(
        status=STATUS_FINISHED if finished else STATUS_RUNNING,
        base_model=base_model(path, folders),
        method={"name": "adapter" if adapters else "full"},
        loss="trainer",
        hyperparameters={k: state[k] for k in ("max_steps", "num_train_epochs", "train_batch_size") if k in state},
        notes=(f"read from {source.relative_to(path) if source else 'no trainer_state.json'}",),
    )
    return TrainerRun(info, tuple(checkpoints), tuple(metrics), tuple(logs), tuple(problems))


def trainer_metrics(triples: list[tuple[str, str, str, float]], now: float = 0.0) -> list[Metric]:
    """(checkpoint, split, key, value) of a Trainer's eval logs as records: the loss as
    ppl "trainer", everything else under its own name, percentages decided per series."""
    percent = _percent_series(triples)
    out = []
    for name, split, key, value in triples:
        if key == "loss":
            ppl = math.inf if value >= 700 else math.exp(value)  # nan stays nan: metric_problem names it
            out.append(Metric(name, split, "ppl", ppl, "trainer", None, now))
        else:
            scale = 100.0 if (split, key) in percent else 1.0
            out.append(Metric(name, split, TRAINER_METRIC + key, value / scale, "trainer", None, now))
    return out


def _folder_epoch(folder: Path | None) -> float | None:
    if folder is None:
        return None
    try:
        epoch = load_json(folder / STATE).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None
    return float(epoch) if finite(epoch) else None
