"""The one reader of run directories: a full load, or an incremental poll for live views.

``RunReader.poll()`` re-reads only what changed: new complete lines of
metrics.jsonl from a byte offset, checkpoint folders not seen before, run.json
when its mtime moves. It returns a fresh immutable ``Run`` or ``None`` when
nothing changed, so a watcher can poll every few hundred milliseconds cheaply.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from overmem.errors import CorruptRun, RunNotFound
from overmem.rundir import hf_trainer
from overmem.rundir.sources import SOURCE_HF, SOURCE_OVERMEM, detect_source, writer_for
from overmem.rundir.io import TOO_LONG, JsonlTail, parse_json, read_json
from overmem.rundir.writer import CHECKPOINT_JSON, RUN_JSON
from overmem.rundir.records import KIND_BASE, KIND_MERGE, CheckpointInfo, Metric, Run, RunInfo, TrainLog
from overmem.rundir.fields import RecordError
from overmem.rundir.lines import Replaced, Stop, add_train_record, extends, record_from_json
from overmem.rundir.outputs import read_marker
from overmem.rundir.names import is_safe_name, printable, real_path, unsafe_reason

BASE_CHECKPOINT = "ep0"


def base_checkpoint(info: RunInfo) -> CheckpointInfo:
    """The base model as the epoch-0 point of the trajectory."""
    ref = info.base_model_ref
    local = Path(ref) if ref and Path(ref).exists() else None
    return CheckpointInfo(
        name=BASE_CHECKPOINT,
        kind=KIND_BASE,
        epoch=0.0,
        step=0,
        created=info.created,
        path=local,
        extra={"model": info.base_model.get("id") or ref},
    )


def _mtime(path: Path) -> tuple | None:
    """A file's identity for change detection: inode, mtime and size (files are replaced by
    rename, so a new inode shows a rewrite even where timestamps are coarse)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class RunReader:
    """Incremental reader of one run directory (overmem's own, or a Trainer folder and its overlay)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = real_path(path, RunNotFound)
        self.source = detect_source(self.path)
        self.rundir = writer_for(self.path, self.source)
        self._tail = JsonlTail(self.rundir.metrics)
        self._metrics: list[Metric] = []
        self._logs: list[TrainLog] = []
        self._line_problems: list[str] = []
        self._stops: list[Stop] = []
        self._seen: dict[tuple, tuple[float, int]] = {}  # record key -> (value, line) of its latest record
        self._info: RunInfo | None = None
        self._info_problem: str | None = None
        self._checkpoints: dict[str, CheckpointInfo] = {}
        self._ckpt_problems: dict[str, str] = {}
        self._stamps: dict[str, object] = {}
        self._trainer: hf_trainer.TrainerRun | None = None
        self._trainer_problem: str | None = None
        self._snapshot: Run | None = None

    # -- public ----------------------------------------------------------------
    def poll(self) -> Run | None:
        """A new snapshot if anything changed since the last call, else None."""
        changed = self._poll_files()
        if self.source == SOURCE_HF:
            changed |= self._poll_trainer()
        if changed or self._snapshot is None:
            self._snapshot = self._build()
            return self._snapshot
        return None

    @property
    def info_problem(self) -> str | None:
        """Why run.json (the overlay's, for a Trainer folder) cannot be read, or None."""
        self.poll()
        return self._info_problem

    def snapshot(self) -> Run:
        self.poll()
        assert self._snapshot is not None
        return self._snapshot

    # -- overmem's files (the run, or the overlay of a Trainer folder) ----------
    def _poll_files(self) -> bool:
        changed = False
        stamp = _mtime(self.rundir.run_json)
        if stamp != self._stamps.get(RUN_JSON):
            self._stamps[RUN_JSON] = stamp
            changed = True
            try:
                self._info = RunInfo.from_json(read_json(self.rundir.run_json))
                self._info_problem = None
            except FileNotFoundError:
                self._info = None
                self._info_problem = f"{RUN_JSON} is missing" if self.source == SOURCE_OVERMEM else None
            except (OSError, ValueError, TypeError) as exc:  # RecordError is a ValueError
                self._info_problem = f"{RUN_JSON}: {exc}"
        # Listing the folder every poll is cheap and, unlike its mtime, exact on
        # network file systems with coarse timestamps.
        changed |= self._scan_checkpoints()
        stamp = _mtime(self.rundir.selection)
        if stamp != self._stamps.get("selection"):
            self._stamps["selection"] = stamp
            changed = True
        torn_before = self._tail.torn
        lines = self._tail.read_new()
        if self._tail.restarted:
            self._metrics, self._logs, self._line_problems, self._seen, self._stops = [], [], [], {}, []
            changed = True
        for line in lines:
            try:
                if line.text == TOO_LONG:
                    raise ValueError(TOO_LONG)
                record = record_from_json(parse_json(line.text))
            except ValueError as exc:  # bad JSON or a RecordError
                self._line_problems.append(f"metrics.jsonl:{line.lineno}: {exc}")
            else:
                if isinstance(record, Metric):
                    self._add_metric(record, line.lineno)
                elif isinstance(record, Stop):
                    self._stops.append(record)
                elif isinstance(record, Replaced):  # its earlier records describe what it replaced
                    self._metrics = [m for m in self._metrics if m.checkpoint != record.checkpoint]
                    self._seen = {k: v for k, v in self._seen.items() if k[0] != record.checkpoint}
                else:
                    add_train_record(self._logs, record)
        return changed or bool(lines) or torn_before != self._tail.torn

    def _add_metric(self, record: Metric, lineno: int) -> None:
        """Keep every record (the latest of a key counts); a key recorded again with another
        value is a problem unless the new record says it replaces the old (eval --force) or
        grades more rows, keeping every grade of the old (an adaptive evaluation's next look)."""
        key = record.key()
        before = self._seen.get(key)
        if before is not None and before[0] != record.value and not record.replaces \
                and not extends(record.grades, before[2]):
            self._line_problems.append(
                f"metrics.jsonl:{lineno}: {record.checkpoint} {record.split} {record.metric}"
                f"{f' ({record.aggregate})' if record.aggregate else ''} = {record.value:.6g} was already recorded "
                f"as {before[0]:.6g} on line {before[1]}; the later record counts")
        self._seen[key] = (record.value, lineno, record.grades)
        self._metrics.append(record)

    def _scan_checkpoints(self) -> bool:
        folder = self.rundir.checkpoints
        try:
            names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            names = []
        changed = set(names) != set(self._checkpoints) | set(self._ckpt_problems)
        for name in list(self._checkpoints):
            if name not in names:
                del self._checkpoints[name]
        for name in list(self._ckpt_problems):
            if name not in names:
                del self._ckpt_problems[name]
        for name in names:
            if name in self._checkpoints:
                continue
            path = folder / name
            try:
                info = self._read_checkpoint(name, path)
            except FileNotFoundError:
                self._ckpt_problems[name] = f"checkpoints/{name} has no {CHECKPOINT_JSON}"
                continue
            except (OSError, ValueError, TypeError) as exc:  # RecordError is a ValueError
                self._ckpt_problems[name] = f"checkpoints/{name}: {exc}"
                continue
            self._ckpt_problems.pop(name, None)
            self._checkpoints[name] = info
            changed = True
        return changed

    def _read_checkpoint(self, name: str, path: Path) -> CheckpointInfo:
        """A checkpoint folder's record: a real folder of this run (a link to elsewhere, such
        as another run's checkpoint, is refused) whose checkpoint.json names it."""
        if not is_safe_name(name):
            raise RecordError(f"{unsafe_reason(name)}: not a checkpoint name")
        if path.is_symlink() and not real_path(path, RecordError).is_relative_to(self.rundir.path):
            raise RecordError(f"is a link to {real_path(path, RecordError)}, outside this run; not read")
        try:
            obj = read_json(path / CHECKPOINT_JSON)
        except ValueError as exc:
            raise RecordError(f"{CHECKPOINT_JSON}: {exc}") from exc
        info = CheckpointInfo.from_json(obj, path)
        if info.name != name:
            raise RecordError(f"{CHECKPOINT_JSON} names it {info.name!r}, not its folder's name; not read")
        location = info.extra.get("location")
        if location and (read_marker(Path(location)) or {}).get("kind") != KIND_MERGE:
            raise RecordError(f"{CHECKPOINT_JSON} locates it in {location}, which is no merge overmem wrote; not read")
        return info

    # -- a Trainer's own files ---------------------------------------------------
    def _poll_trainer(self) -> bool:
        source = hf_trainer.state_file(self.path)
        folders = hf_trainer.checkpoint_folders(self.path)
        stamp = (source, _mtime(source) if source else None, tuple(sorted(folders)))
        if stamp == self._stamps.get("hf"):
            return False
        self._stamps["hf"] = stamp
        try:
            self._trainer = hf_trainer.read_trainer_folder(self.path)
            self._trainer_problem = None
        except (OSError, ValueError, TypeError) as exc:
            self._trainer_problem = f"trainer_state.json: {exc}"
        return True

    def _merged_info(self) -> RunInfo | None:
        """A Trainer folder's info: what its files say, with the overlay's definitions on top."""
        trainer = self._trainer.info if self._trainer else None
        overlay = self._info
        if trainer is None or overlay is None:
            return trainer or overlay
        base = overlay.base_model if overlay.base_model.get("id") not in (None, "unknown") else trainer.base_model
        return replace(overlay, status=trainer.status, base_model=base,
                       hyperparameters={**trainer.hyperparameters, **overlay.hyperparameters},
                       method=trainer.method, notes=trainer.notes + overlay.notes)

    # -- snapshot --------------------------------------------------------------
    def _build(self) -> Run:
        own = list(self._checkpoints.values())
        if self.source == SOURCE_HF:
            info = self._merged_info()
            checkpoints = list(self._trainer.checkpoints if self._trainer else ()) + own
            metrics = list(self._trainer.metrics if self._trainer else ()) + self._metrics
            logs = list(self._trainer.train_logs if self._trainer else ()) + self._logs
            problems = list(self._trainer.problems if self._trainer else ())
            if self._trainer_problem:
                problems.insert(0, self._trainer_problem)
        else:
            info, checkpoints, metrics, logs, problems = self._info, own, list(self._metrics), list(self._logs), []
        names = {c.name for c in checkpoints}
        if info is not None and BASE_CHECKPOINT not in names and info.base_model_ref not in ("", "unknown"):
            checkpoints.append(base_checkpoint(info))
        checkpoints.sort(key=CheckpointInfo.order_key)
        problems += list(self._line_problems) + list(self._ckpt_problems.values())
        if self._info_problem:
            problems.insert(0, self._info_problem)
        return Run(
            path=self.path,
            source=self.source,
            info=info,
            checkpoints=tuple(checkpoints),
            metrics=tuple(metrics),
            train_logs=tuple(logs),
            problems=tuple(printable(p) for p in problems),
            torn_tail=self._tail.torn,
            selected=self.rundir.read_selection(),
            stops=tuple(self._stops),
        )


def load_run(path: str | os.PathLike, *, strict: bool = False) -> Run:
    """Read a run directory into an immutable snapshot.

    A torn last line is skipped (it is read once complete). With ``strict`` any
    other problem (an unreadable run.json, a record with a non-numeric value)
    raises CorruptRun naming the file and line.
    """
    run = RunReader(path).snapshot()
    if strict:
        check_problems(run)
    return run


def check_problems(run: Run, after: str = "") -> None:
    """CorruptRun naming the run's first problem (and how many more), if it has any."""
    if run.problems:
        more = f" (and {len(run.problems) - 1} more)" if len(run.problems) > 1 else ""
        raise CorruptRun(f"{run.path}: {run.problems[0]}{more}{after}")
