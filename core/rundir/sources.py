"""What kind of run a folder is, and where overmem writes for it.

An overmem run directory is its own place; a Trainer output folder (transformers,
TRL, axolotl) is read as it is, and overmem's results go to its overlay, a real
folder ``overmem/`` inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from overmem.rundir.names import real_path
from overmem.errors import CorruptRun, RunNotFound
from overmem.rundir import hf_trainer
from overmem.rundir.writer import RUN_JSON, RunDir

SOURCE_OVERMEM = "overmem"
SOURCE_HF = "hf-trainer"
OVERLAY = "overmem"  # overmem's folder inside a Trainer output folder


def detect_source(path: Path) -> str:
    if not path.exists():
        raise RunNotFound(f"{path}: no such directory")
    if not path.is_dir():
        raise RunNotFound(f"{path} is not a directory")
    if (path / RUN_JSON).is_file():
        return SOURCE_OVERMEM
    if hf_trainer.is_trainer_folder(path):
        return SOURCE_HF
    raise RunNotFound(
        f"{path} is neither an overmem run (no run.json) nor a Hugging Face Trainer output "
        "(no trainer_state.json)"
    )


def run_dir_for(path: str | os.PathLike) -> RunDir:
    """Where overmem writes for the run at ``path``: the run itself, or a Trainer folder's overlay."""
    path = real_path(path, RunNotFound)
    return writer_for(path, detect_source(path))


def writer_for(path: Path, source: str) -> RunDir:
    """The writer of a run whose kind (``detect_source``) is known."""
    return overlay(path) if source == SOURCE_HF else RunDir(path)


def overlay(trainer_folder: Path) -> RunDir:
    """A Trainer folder's overlay: a real folder inside it, never a link that leads elsewhere."""
    folder = trainer_folder / OVERLAY
    if folder.is_symlink():
        raise CorruptRun(f"{folder} is a link; overmem keeps a Trainer folder's results only in a real folder "
                         "inside it (remove the link)")
    return RunDir(folder)
