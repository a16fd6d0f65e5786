"""Typed, immutable records of a run directory and their JSON forms.

These classes are the whole vocabulary the trainer, evaluator, merger, TUI and
reports share; nothing else reads or writes the files by string keys. run.json and
checkpoint.json are here, the lines of metrics.jsonl in lines.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from overmem.rundir.fields import RecordError, count as _count, names as _names, number as _number
from overmem.rundir.fields import text as _text, typed as _typed
from overmem.rundir.names import safe_name
from overmem.rundir.lines import Metric, Stop, TrainLog

SCHEMA_VERSION = 1

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"
STATUS_STOPPED = "stopped"  # stopped early on purpose (train --stop-at, watch's stop key); see its Stop record
STATUSES = (STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED, STATUS_STOPPED)
ENDED = (STATUS_FINISHED, STATUS_FAILED, STATUS_STOPPED)  # no more checkpoints will come

KIND_BASE = "base"
KIND_ADAPTER = "adapter"
KIND_FULL = "full"
KIND_MERGE = "merge"

@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` says: what was trained and how, and whether it still runs."""

    status: str
    base_model: dict
    method: dict = field(default_factory=dict)
    loss: str = "sft"
    hyperparameters: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    prompt_template: str = ""
    seed: int = 0
    created: float = 0.0
    updated: float = 0.0
    overmem_version: str = ""
    schema_version: int = SCHEMA_VERSION
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> "RunInfo":
        if not isinstance(obj, dict):
            raise RecordError("run.json is not an object")
        version = obj.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RecordError(
                f"schema_version {version!r} is not one this overmem reads (<= {SCHEMA_VERSION})"
            )
        status = obj.get("status")
        if status not in STATUSES:
            raise RecordError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        base = _typed(obj, "base_model", (dict,), None)
        if base is None:
            raise RecordError("base_model is missing")
        for key in ("id", "path", "gguf_file", "tokenizer"):
            _typed(base, key, (str,), None)
        _typed(base, "trust_remote_code", (bool,), False)
        return cls(
            status=status,
            base_model=dict(base),
            method=dict(_typed(obj, "method", (dict,), {})),
            loss=_typed(obj, "loss", (str,), "sft"),
            hyperparameters=dict(_typed(obj, "hyperparameters", (dict,), {})),
            data=dict(_typed(obj, "data", (dict,), {})),
            prompt_template=_typed(obj, "prompt_template", (str, dict), ""),
            seed=_typed(obj, "seed", (int,), 0),
            created=_number(obj, "created", optional=True) or 0.0,
            updated=_number(obj, "updated", optional=True) or 0.0,
            overmem_version=_typed(obj, "overmem_version", (str,), ""),
            schema_version=version,
            notes=tuple(str(n) for n in _typed(obj, "notes", (list,), [])),
        )

    @property
    def base_model_ref(self) -> str:
        """Where to load the base model from: a local path if recorded, else the hub id."""
        return self.base_model.get("path") or self.base_model.get("id") or ""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint: a trained state, the base (as epoch 0) or a merge."""

    name: str
    kind: str
    epoch: float | None = None
    step: int | None = None
    created: float = 0.0
    parents: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def on_trajectory(self) -> bool:
        """True for points of the training trajectory (base and trained), not merges."""
        return self.kind != KIND_MERGE and (self.epoch is not None or self.step is not None)

    @property
    def is_base(self) -> bool:
        return self.kind == KIND_BASE

    @property
    def is_merge(self) -> bool:
        return self.kind == KIND_MERGE

    @property
    def trained(self) -> bool:
        """A trained point of the trajectory (not the base, not a merge)."""
        return self.on_trajectory and not self.is_base

    def order_key(self) -> tuple:
        return (
            0 if self.on_trajectory else 1,
            self.epoch if self.epoch is not None else math.inf,
            self.step if self.step is not None else math.inf,
            self.name,
        )

    def to_json(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "kind": self.kind,
            "epoch": self.epoch,
            "step": self.step,
            "created": self.created,
            "parents": list(self.parents),
            "weights": list(self.weights),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, obj: Any, path: Path | None) -> "CheckpointInfo":
        if not isinstance(obj, dict):
            raise RecordError("checkpoint.json is not an object")
        extra = dict(_typed(obj, "extra", (dict,), {}))
        location = _typed(extra, "location", (str,), None)
        if location is not None and not Path(location).is_absolute():
            raise RecordError(f"extra.location {location!r} is not an absolute path")
        step = _count(obj, "step")
        return cls(
            name=safe_name(obj.get("name"), "checkpoint name", RecordError),
            kind=_text(obj, "kind"),
            epoch=_number(obj, "epoch", optional=True),
            step=step,
            created=_number(obj, "created", optional=True) or 0.0,
            parents=_names(obj, "parents", "parent checkpoint name"),
            weights=tuple(_number({"weight": w}, "weight") for w in _typed(obj, "weights", (list,), [])),
            # a checkpoint written elsewhere (merge --out DIR) records its location: read, never written
            path=Path(location) if location else path,
            extra=extra,
        )


@dataclass(frozen=True)
class Run:
    """An immutable snapshot of one run directory (overmem's own or an HF Trainer's)."""

    path: Path
    source: str
    info: RunInfo | None
    checkpoints: tuple[CheckpointInfo, ...]
    metrics: tuple[Metric, ...]
    train_logs: tuple[TrainLog, ...] = ()
    problems: tuple[str, ...] = ()
    torn_tail: bool = False
    selected: str | None = None
    stops: tuple[Stop, ...] = ()  # stop requests and stops, in file order

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str | None:
        return self.info.status if self.info else None

    def checkpoint(self, name: str) -> CheckpointInfo | None:
        for ckpt in self.checkpoints:
            if ckpt.name == name:
                return ckpt
        return None

    def splits(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for m in self.metrics:
            if m.probe is None:
                seen.setdefault(m.split, None)
        return tuple(seen)
