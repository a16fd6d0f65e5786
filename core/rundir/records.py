"""Typed, immutable records of a run directory and their JSON forms.

These classes are the whole vocabulary the trainer, evaluator, merger, TUI and
reports share; nothing else reads or writes the files by string keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from overmem.errors import CorruptRun

SCHEMA_VERSION = 1

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"
STATUSES = (STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED)

KIND_BASE = "base"
KIND_ADAPTER = "adapter"
KIND_FULL = "full"
KIND_MERGE = "merge"

# Canonical split names; "validation"/"eval" are accepted as aliases of "val".
SPLIT_ALIASES = {"validation": "val", "eval": "val", "valid": "val", "dev": "val"}


def canonical_split(name: str) -> str:
    return SPLIT_ALIASES.get(name, name)


class RecordError(CorruptRun, ValueError):
    """A JSON record that does not have the shape of the contract (a ValueError too, for parsers)."""


def _number(obj: dict, key: str, *, optional: bool = False) -> float | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{key} {value!r} is not a number")
    if not math.isfinite(value) and key != "value":
        raise RecordError(f"{key} {value!r} is not finite")
    return float(value)


def _text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key} {value!r} is not a non-empty string")
    return value


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
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RecordError(
                f"schema_version {version!r} is not one this overmem reads (<= {SCHEMA_VERSION})"
            )
        status = obj.get("status")
        if status not in STATUSES:
            raise RecordError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(obj.get("base_model"), dict):
            raise RecordError("base_model is missing")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in obj.items() if k in known}
        kwargs["notes"] = tuple(obj.get("notes", ()))
        return cls(**kwargs)

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
        return cls(
            name=_text(obj, "name"),
            kind=_text(obj, "kind"),
            epoch=_number(obj, "epoch", optional=True),
            step=None if obj.get("step") is None else int(_number(obj, "step")),
            created=float(obj.get("created") or 0.0),
            parents=tuple(obj.get("parents") or ()),
            weights=tuple(float(w) for w in obj.get("weights") or ()),
            # a checkpoint written elsewhere (e.g. merge --out DIR) records its location
            path=Path(obj["extra"]["location"]) if (obj.get("extra") or {}).get("location") else path,
            extra=dict(obj.get("extra") or {}),
        )


@dataclass(frozen=True)
class Metric:
    """One evaluated number: (checkpoint, split, metric, aggregate) -> value over n samples.

    ``probe`` names the behavioural probe for probe metrics (split is then the
    data the probe ran on).
    """

    checkpoint: str
    split: str
    metric: str
    value: float
    aggregate: str = ""
    n: int | None = None
    time: float = 0.0
    probe: str | None = None

    def key(self) -> tuple:
        return (self.checkpoint, self.split, self.metric, self.aggregate, self.probe)

    def to_json(self) -> dict:
        out = {
            "type": "metric",
            "checkpoint": self.checkpoint,
            "split": self.split,
            "metric": self.metric,
            "aggregate": self.aggregate,
            "value": self.value,
            "n": self.n,
            "time": self.time,
        }
        if self.probe:
            out["probe"] = self.probe
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Metric":
        n = obj.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise RecordError(f"n {n!r} is not a sample count")
        return cls(
            checkpoint=_text(obj, "checkpoint"),
            split=canonical_split(_text(obj, "split")),
            metric=_text(obj, "metric"),
            value=_number(obj, "value"),
            aggregate=str(obj.get("aggregate") or ""),
            n=n,
            time=float(obj.get("time") or 0.0),
            probe=obj.get("probe") or None,
        )


@dataclass(frozen=True)
class TrainLog:
    """A training progress record: loss and learning rate at a step."""

    step: int
    epoch: float
    loss: float
    lr: float
    total_steps: int | None = None
    tokens_per_s: float | None = None
    time: float = 0.0

    def to_json(self) -> dict:
        return {"type": "train", **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict) -> "TrainLog":
        total = obj.get("total_steps")
        return cls(
            step=int(_number(obj, "step")),
            epoch=_number(obj, "epoch"),
            loss=_number(obj, "loss"),
            lr=_number(obj, "lr"),
            total_steps=None if total is None else int(total),
            tokens_per_s=_number(obj, "tokens_per_s", optional=True),
            time=float(obj.get("time") or 0.0),
        )


def record_from_json(obj: Any) -> Metric | TrainLog:
    """Parse one metrics.jsonl record (raises RecordError on a bad shape)."""
    if not isinstance(obj, dict):
        raise RecordError("record is not an object")
    kind = obj.get("type", "metric")
    if kind == "metric":
        return Metric.from_json(obj)
    if kind == "train":
        return TrainLog.from_json(obj)
    raise RecordError(f"unknown record type {kind!r}")


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
