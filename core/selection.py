"""Name and select a checkpoint of a run, and optionally export it to a folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from overmem.errors import CorruptRun, UnknownCheckpoint, UsageError
from overmem.rundir import RunDir, load_run
from overmem.rundir.io import swap_in, temp_sibling
from overmem.rundir.writer import RUN_JSON
from overmem.rundir.names import real_path, safe_name
from overmem.rundir.outputs import check_output, mark_output
from overmem.rundir.records import Run
from overmem.rundir.sources import SOURCE_OVERMEM

RECOMMENDED, LATEST = "recommended", "latest"  # names a command may take for a run's checkpoints


def resolve_checkpoints(run: Run, names: list[str]) -> list[str]:
    """Checkpoint names, with 'recommended' (the advice's pick) and 'latest' (the last trained
    checkpoint) resolved; UsageError for a name the run does not have."""
    from overmem.summary import summarize

    out = []
    for name in names:
        if name == RECOMMENDED:
            advice = summarize(run).advice
            if advice.recommended is None:
                why = advice.reasons[0] if advice.reasons else "evaluate the run first"
                raise UsageError(f"no checkpoint is recommended ({why}); name checkpoints with --checkpoints")
            name = advice.recommended
        elif name == LATEST:
            trained = [c for c in run.checkpoints if c.trained]
            if not trained:
                raise UsageError("the run has no trained checkpoint yet")
            name = trained[-1].name
        if run.checkpoint(name) is None:
            raise UsageError(f"no checkpoint {name!r} in {run.path}")
        if name not in out:
            out.append(name)
    return out


def select_checkpoint(
    run_path: str | os.PathLike,
    name: str,
    export: str | os.PathLike | None = None,
    *,
    link: bool = False,
    force: bool = False,
) -> Path | None:
    """Record ``name`` as the run's chosen checkpoint; copy (or symlink) it to ``export``.

    The copy is made under a hidden temporary name and renamed, so ``export``
    never holds half a checkpoint. Returns the export path, if any.
    """
    run = load_run(run_path)
    ckpt = run.checkpoint(safe_name(name, "checkpoint name"))
    if ckpt is None:
        have = ", ".join(c.name for c in run.checkpoints) or "none"
        raise UnknownCheckpoint(f"no checkpoint {name!r} in {run.path} (checkpoints: {have})")
    target = None
    if export is not None:
        if ckpt.path is None or not ckpt.path.is_dir():
            raise UsageError(f"checkpoint {name} has no folder to export")
        target = check_output(export, force=force, option="--export")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(target, "export")
        if not link:
            _exportable(ckpt.path)
        if link:
            os.symlink(ckpt.path, tmp)
        else:
            try:
                shutil.copytree(ckpt.path, tmp, symlinks=False)
                mark_output(tmp, "export", f"{run.path}:{name}")
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        swap_in(tmp, target)
    if run.source == SOURCE_OVERMEM:
        RunDir(run.path).write_selection(name, str(target) if target else None)
    return target


def _exportable(folder: Path) -> None:
    """A checkpoint folder that can be copied out: a copy follows links, so no link may lead out
    of it or to a folder (a key, a home folder, the whole disk, a loop), and it holds no run."""
    root = real_path(folder, CorruptRun)
    for current, dirs, files in os.walk(folder):
        if RUN_JSON in files:
            raise CorruptRun(f"{Path(current) / RUN_JSON}: the checkpoint holds a run; not exported")
        for name in dirs + files:
            entry = Path(current) / name
            if entry.is_symlink() and (entry.is_dir() or not real_path(entry, CorruptRun).is_relative_to(root)):
                raise CorruptRun(f"{entry} is a link to {real_path(entry, CorruptRun)}, a folder or outside the "
                                 "checkpoint; not exported "
                                 "(export with --link, or remove the link)")
