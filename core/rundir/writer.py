"""The run directory's writer: where each file lives, and the only code that writes them.

This docstring is the one description of the tree (the README points here)::

    RUN/
      run.json                 what was trained: base, method, loss, hyperparameters, data and
                               split definitions (hub datasets with their commit), prompt
                               format, seed, status, schema_version (RunInfo)
      metrics.jsonl            append-only records (lines.py): {"type":"metric", checkpoint, split,
                               metric, aggregate, value, n, time[, probe][, replaces]},
                               {"type":"train", step, epoch, loss, lr, ...}, {"type":"resume",
                               step, checkpoint}, {"type":"replaced", checkpoint} (a merge
                               made again: earlier records are the old one's) and {"type":"stop",
                               reason, by, done[, checkpoint, step]} (a stop asked for, or carried
                               out: run.json's status is then "stopped"); lines are written
                               whole, under a lock, and a line torn by a writer that died is
                               cut before the next one
      checkpoints/<name>/      ep3, step1200, merge-ep3+ep10 ... each with checkpoint.json
                               (kind, epoch, step, parents, weights); appears by rename
      samples/<name>/<split>.<part>.jsonl   per-sample sidecars: ppl (NLL sums, token counts),
                               gen (generations, grades), probe-<name>
      samples/_splits/<split>.rows.jsonl    the rows a split was evaluated on
      data/<split>.jsonl       split rows handed over in code (OvermemCallback(splits=...))
      claims/<name>.json       an evaluator's lease on a checkpoint: host, pid, heartbeat
      training.json            the trainer's lease on the run (one trainer at a time)
      init_adapter/            PiSSA/MiLoRA initial adapter (B0, A0)
      state/                   optimizer, scheduler and RNG state for --resume
      selection.json           the checkpoint chosen with select/export

    TRAINER_OUTPUT/            a Trainer/TRL/axolotl output_dir, read as it is (hf_trainer.py)
      checkpoint-N/ ...        the Trainer's checkpoints (never modified)
      overmem/                 an overmem run directory (the tree above) of overmem's results:
                               split definitions, metrics, samples, claims, merges, selection
"""

from __future__ import annotations

import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator

from overmem import __version__
from overmem.errors import CorruptRun, OutputExists, RunNotFound
from overmem.rundir import io
from overmem.rundir.claims import CLAIM_TIMEOUT, Claim, describe_holder, holders, process_gone, try_claim
from overmem.rundir.names import inside, is_safe_name, real_path, safe_name
from overmem.rundir.samples import GEN, PPL, ROWS, PplSample, from_rows, to_rows
from overmem.rundir.records import (
    CheckpointInfo,
    Metric,
    RunInfo,
    TrainLog,
)

RUN_JSON = "run.json"
METRICS_JSONL = "metrics.jsonl"
SELECTION = "selection.json"
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
CLAIMS = "claims"
INIT_ADAPTER = "init_adapter"
SPLITS_SIDECAR = "_splits"  # samples/_splits/<split>.rows.jsonl: the rows a split was evaluated on
STATE = "state"
DATA = "data"  # data/<split>.jsonl: rows a callback was given in code
TRAINING_LEASE = "training.json"
_TEMPORARY = re.compile(r"^\..+\.(?:staging|old|tmp|export)-(\d+)$")  # io.temp_sibling's names


class RunDir:
    """Paths of one overmem run directory plus its writers."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = real_path(path, RunNotFound)

    # -- paths ---------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_JSONL

    @property
    def selection(self) -> Path:
        return self.path / SELECTION

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def init_adapter(self) -> Path:
        return self.path / INIT_ADAPTER

    @property
    def state(self) -> Path:
        return self.path / STATE

    def checkpoint(self, name: str) -> Path:
        return self.within(self.checkpoints / safe_name(name, "checkpoint name"))

    def sidecar(self, checkpoint: str, split: str, part: str) -> Path:
        folder = self.path / SAMPLES / safe_name(checkpoint, "checkpoint name")
        return self.within(folder / f"{safe_name(split, 'split name')}.{safe_name(part, 'sample kind')}.jsonl")

    def claim_path(self, checkpoint: str) -> Path:
        return self.within(self.path / CLAIMS / f"{safe_name(checkpoint, 'checkpoint name')}.json")

    def within(self, path: Path) -> Path:
        """``path`` (unresolved, so a rename replaces a link rather than its target) once it is
        checked to lie inside the run with every symlink resolved (UsageError otherwise)."""
        inside(self.path, path)
        return path

    def exists(self) -> bool:
        return self.run_json.is_file()

    # -- run.json --------------------------------------------------------------
    def create(self, info: RunInfo, *, exist_ok: bool = False) -> RunInfo:
        if self.exists() and not exist_ok:
            raise OutputExists(f"{self.path} already holds a run (use --resume or another --out)")
        now = time.time()
        info = replace(
            info,
            created=info.created or now,
            updated=now,
            overmem_version=__version__,
        )
        self.path.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(self.within(self.run_json), info.to_json())
        return info

    def read_info(self) -> RunInfo:
        if not self.exists():
            raise RunNotFound(f"{self.path} has no {RUN_JSON}")
        try:
            return RunInfo.from_json(io.read_json(self.run_json))
        except (ValueError, TypeError) as exc:  # bad JSON or a record of the wrong shape
            raise CorruptRun(f"{self.run_json}: {exc}") from exc

    def update_info(self, **changes) -> RunInfo:
        info = replace(self.read_info(), updated=time.time(), **changes)
        io.atomic_write_json(self.within(self.run_json), info.to_json())
        return info

    def set_status(self, status: str) -> RunInfo:
        return self.update_info(status=status)

    # -- metrics.jsonl ---------------------------------------------------------
    def append(self, records: Iterable[Metric | TrainLog]) -> None:
        path = self.within(self.metrics)
        for record in records:
            io.append_line(path, record.to_json())

    # -- checkpoints -------------------------------------------------------------
    @contextmanager
    def stage_checkpoint(self, info: CheckpointInfo, force: bool = False) -> Iterator[Path]:
        """Yield a hidden folder to write a checkpoint into; it appears complete or not at all."""
        final = self.checkpoint(info.name)
        if final.exists() and not force:
            raise OutputExists(f"checkpoint {info.name} already exists in {self.path}")
        with io.staged_dir(final, force=force) as tmp:
            yield tmp
            stamped = replace(info, created=info.created or time.time())
            io.atomic_write_json(tmp / CHECKPOINT_JSON, stamped.to_json())

    def register_checkpoint(self, info: CheckpointInfo) -> None:
        """Write checkpoint.json into an existing, complete folder (e.g. a merge output elsewhere)."""
        folder = self.checkpoint(info.name)
        stamped = replace(info, created=info.created or time.time())
        io.atomic_write_json(folder / CHECKPOINT_JSON, stamped.to_json())

    # -- sidecars ----------------------------------------------------------------
    def write_sidecar(self, checkpoint: str, split: str, part: str, rows: list[dict]) -> Path:
        path = self.sidecar(checkpoint, split, part)
        io.write_jsonl_atomic(path, rows)
        return path

    def write_samples(self, checkpoint: str, split: str, records: list) -> Path:
        """Typed per-sample records (samples.py), in the sidecar of their kind."""
        part = PPL if records and isinstance(records[0], PplSample) else GEN
        return self.write_sidecar(checkpoint, split, part, to_rows(records))

    def write_split_rows(self, split: str, rows: list[dict]) -> Path:
        """The rows ``split`` is evaluated on, numbered (samples/_splits/<split>.rows.jsonl), once:
        later views show a sample's question from here."""
        path = self.sidecar(SPLITS_SIDECAR, split, ROWS)
        if not path.exists():
            io.write_jsonl_atomic(path, [{"idx": i, **r} for i, r in enumerate(rows)])
        return path

    def write_data(self, split: str, rows: list[dict]) -> Path:
        """A split's rows handed over in code, kept in the run (data/<split>.jsonl) so that
        ``overmem eval`` can rebuild the split later; returns the file."""
        path = self.within(self.path / DATA / f"{safe_name(split, 'split name')}.jsonl")
        io.write_jsonl_atomic(path, rows)
        return path

    def read_samples(self, checkpoint: str, split: str, kind) -> list:
        return from_rows(kind, self.read_sidecar(checkpoint, split, PPL if kind is PplSample else GEN))

    def read_sidecar(self, checkpoint: str, split: str, part: str) -> list[dict]:
        path = self.sidecar(checkpoint, split, part)
        if not path.is_file():
            return []
        return [io.parse_json(line) for line in io.read_small(path, 1024**3).splitlines() if line.strip()]

    # -- selection ---------------------------------------------------------------
    def write_selection(self, name: str, exported_to: str | None = None) -> None:
        record = {"checkpoint": safe_name(name, "checkpoint name"), "exported_to": exported_to, "time": time.time()}
        io.atomic_write_json(self.within(self.selection), record)

    def read_selection(self) -> str | None:
        try:
            obj = io.read_json(self.selection)
        except (OSError, ValueError):
            return None
        name = obj.get("checkpoint") if isinstance(obj, dict) else None
        return name if is_safe_name(name) else None

    # -- claims ------------------------------------------------------------------
    def try_claim(self, checkpoint: str, *, steal: bool = False, timeout: float = CLAIM_TIMEOUT) -> Claim | None:
        """Claim a checkpoint for evaluation; None while a live evaluator holds it (claims.py)."""
        return try_claim(self.claim_path(checkpoint), steal=steal, timeout=timeout)

    def claimed(self) -> list[str]:
        return holders(self.path / CLAIMS)

    def try_lease(self, *, timeout: float = CLAIM_TIMEOUT) -> Claim | None:
        """The training lease (one trainer per run); None while a live trainer holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        return try_claim(self.within(self.path / TRAINING_LEASE), timeout=timeout)

    def remove_stale_temporaries(self) -> list[str]:
        """Remove what writers that died left half-made: hidden staging, old and temporary
        folders and files of processes gone from this host, and the trainer's state staging
        (call it holding the training lease: then no trainer writes one). Returns their names."""
        removed = []
        for folder in (self.path, self.within(self.checkpoints)):
            try:
                entries = list(folder.iterdir())
            except FileNotFoundError:
                continue
            for entry in entries:
                found = _TEMPORARY.match(entry.name)
                if found is None:
                    continue
                trainer_state = entry.name.startswith(f".{STATE}.staging-")
                if not trainer_state and not process_gone(int(found.group(1))):
                    continue
                if entry.is_symlink() or not entry.is_dir():
                    entry.unlink(missing_ok=True)  # a link goes, never what it points to
                else:
                    shutil.rmtree(self.within(entry), ignore_errors=True)
                removed.append(entry.name)
        return removed

    def lease_holder(self) -> str:
        """Who holds the training lease, in words."""
        return describe_holder(self.path / TRAINING_LEASE)
