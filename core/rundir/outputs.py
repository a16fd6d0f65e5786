"""Where overmem may put what it writes outside a run's own files, and what ``--force`` may replace.

Outputs (a merge's ``--out``, ``select --export``, the demo's folder, a new run) never
are, contain or lie inside a run directory's records, checkpoints or state, this run's
or any other overmem run's or Trainer folder's; ``--force`` replaces only what overmem
wrote there itself before: a folder with overmem's output marker, a link (only the link
goes), or an empty folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from overmem.errors import OutputExists, UsageError
from overmem.rundir import hf_trainer
from overmem.rundir.io import atomic_write_json, load_json
from overmem.rundir.writer import (CHECKPOINTS, CLAIMS, DATA, INIT_ADAPTER, METRICS_JSONL, RUN_JSON, SAMPLES, SELECTION,
                                   STATE, TRAINING_LEASE)
from overmem.rundir.names import real_path
from overmem.rundir.sources import OVERLAY

MARKER = ".overmem-output.json"  # written into every folder overmem creates as an output
RUN_PARTS = frozenset({RUN_JSON, METRICS_JSONL, SELECTION, CHECKPOINTS, SAMPLES, CLAIMS, INIT_ADAPTER, STATE, DATA,
                       TRAINING_LEASE})


def _is_run(path: Path) -> str | None:
    """"overmem run" or "Trainer output folder" when ``path`` is one (an export of a Trainer
    checkpoint holds its trainer_state.json but is overmem's output, not a run)."""
    if (path / RUN_JSON).is_file():
        return "overmem run"
    if hf_trainer.is_trainer_folder(path) and not (path / MARKER).is_file():
        return "Trainer output folder"
    return None


def _protected(kind: str, part: str) -> bool:
    if kind == "overmem run":
        return part in RUN_PARTS
    return part in (OVERLAY, hf_trainer.STATE) or hf_trainer.is_checkpoint_name(part)


def lexical(path: str | os.PathLike) -> Path:
    """``path`` absolute with its folders' links resolved but not its own last component (a
    link is replaced as a link, never through it)."""
    path = Path(path).expanduser()
    if path.name in ("", ".", ".."):  # names a folder by its relation to another: resolve it all
        return real_path(path)
    return real_path(path.parent) / path.name


def refuse_reason(target: str | os.PathLike) -> str | None:
    """Why ``target`` can never be an output (it is a run, or lies inside one's records,
    checkpoints or state), or None."""
    real = lexical(target)
    for folder in (real, *real.parents):
        kind = _is_run(folder)
        if kind is None:
            continue
        if folder == real:
            return f"{target} is an {kind}" if kind.startswith("o") else f"{target} is a {kind}"
        part = real.relative_to(folder).parts[0]
        if _protected(kind, part):
            return f"{target} lies inside {part} of the {kind} {folder}"
    return None


def _holds_a_run(folder: Path) -> Path | None:
    """A run inside an output folder of overmem's (its own top may hold an exported
    checkpoint's trainer_state.json, never a run.json)."""
    for root, dirs, files in os.walk(folder):
        if RUN_JSON in files or (hf_trainer.STATE in files and Path(root) != folder):
            return Path(root)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return None


def replaceable(target: Path) -> str | None:
    """None when ``--force`` may replace the existing ``target``, else why not."""
    if target.is_symlink():
        return None  # only the link goes
    if target.is_dir():
        if (target / MARKER).is_file():
            inner = _holds_a_run(target)
            return None if inner is None else f"it holds the run {inner}"
        if not any(target.iterdir()):
            return None
        return "overmem did not write it (it has no overmem output marker)"
    return "it is a file overmem did not write"


def check_output(target: str | os.PathLike, *, force: bool, option: str = "--out") -> Path:
    """The absolute output path, once it is allowed: not a run's part (UsageError), and new or
    replaceable with ``force`` (OutputExists / UsageError naming why not)."""
    reason = refuse_reason(target)
    if reason:
        raise UsageError(f"{option}: {reason}; choose a folder outside it")
    path = lexical(target)
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputExists(f"{path} exists (use --force to replace it)")
        why = replaceable(path)
        if why:
            raise UsageError(f"{option}: --force replaces only what overmem wrote there before, and {path} is not "
                             f"that: {why}; remove it yourself or choose another {option}")
    return path


def check_new_run(target: str | os.PathLike) -> None:
    """A new run is never created inside another run's records or a Trainer folder's checkpoints."""
    real = lexical(target)
    if real.exists() and not real.is_dir():
        raise UsageError(f"--out: {target} is a file, not a folder")
    if _is_run(real) == "Trainer output folder":
        raise UsageError(f"--out: {target} is a Trainer output folder; overmem reads it as it is (overmem eval "
                         f"{target}), and trains into a folder of its own")
    for folder in real.parents:
        kind = _is_run(folder)
        if kind is not None and _protected(kind, real.relative_to(folder).parts[0]):
            raise UsageError(f"--out: {target} lies inside {real.relative_to(folder).parts[0]} of the {kind} "
                             f"{folder}; choose a folder outside it")


def mark_output(folder: Path, kind: str, source: str = "") -> None:
    """Say that overmem wrote ``folder`` (so a later ``--force`` may replace it)."""
    atomic_write_json(folder / MARKER, {"kind": kind, "source": source, "time": time.time()})


def read_marker(folder: Path) -> dict | None:
    try:
        obj = load_json(folder / MARKER)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
