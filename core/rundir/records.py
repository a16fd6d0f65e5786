"""Typed, immutable records of a run directory and their JSON forms.

These classes are the whole vocabulary the trainer, evaluator, merger, TUI and
reports share; nothing else reads or writes the files by string keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from overmem.errors import CorruptRun
from overmem.rundir.names import safe_name

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
    if not math.isfinite(value):
        raise RecordError(f"{key} {value!r} is not finite")
    return float(value)


def _count(obj: dict, key: str) -> int | None:
    """A non-negative whole number, or None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or int(value) != value:
        raise RecordError(f"{key} {value!r} is not a non-negative whole number")
    return int(value)


def _text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key} {value!r} is not a non-empty string")
    return value


def _typed(obj: dict, key: str, kinds: tuple[type, ...], default: Any) -> Any:
    """``obj[key]`` when it has one of ``kinds`` (absent or null: ``default``)."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RecordError(f"{key} {value!r} is not a {names}")
    return value


def _names(obj: dict, key: str, what: str) -> tuple[str, ...]:
    values = _typed(obj, key, (list,), [])
    return tuple(safe_name(v, what, RecordError) for v in values)


def value_problem(metric: str, value: Any) -> str | None:
    """Why ``value`` cannot be a ``metric``'s value, or None: every value is finite, a
    perplexity is at least 1 (exp of a non-negative NLL) and an accuracy a fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "is not a number"
    if not math.isfinite(value):
        return "is not finite"
    if metric == "ppl" and value < 1.0 - 1e-9:
        return "is below 1 (a perplexity is exp of a non-negative loss)"
    if metric == "acc" and not 0.0 <= value <= 1.0:
        return "is not an accuracy in [0, 1]"
    return None


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
    replaces: bool = False  # a deliberate re-evaluation (eval --force): supersedes earlier records of its key

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
        if self.replaces:
            out["replaces"] = True
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Metric":
        checkpoint = safe_name(obj.get("checkpoint"), "checkpoint name", RecordError)
        split = canonical_split(safe_name(obj.get("split"), "split name", RecordError))
        metric = _text(obj, "metric")
        value = obj.get("value")
        problem = value_problem(metric, value)
        if problem:
            raise RecordError(f"checkpoint {checkpoint}, split {split}: {metric} {value!r} {problem}")
        probe = _typed(obj, "probe", (str,), None)
        return cls(
            checkpoint=checkpoint,
            split=split,
            metric=metric,
            value=float(value),
            aggregate=_typed(obj, "aggregate", (str,), ""),
            n=_count(obj, "n"),
            time=_number(obj, "time", optional=True) or 0.0,
            probe=safe_name(probe, "probe name", RecordError) if probe else None,
            replaces=_typed(obj, "replaces", (bool,), False),
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
        step = _count(obj, "step")
        if step is None:
            raise RecordError("step is missing")
        return cls(
            step=step,
            epoch=_number(obj, "epoch"),
            loss=_number(obj, "loss"),
            lr=_number(obj, "lr"),
            total_steps=_count(obj, "total_steps"),
            tokens_per_s=_number(obj, "tokens_per_s", optional=True),
            time=_number(obj, "time", optional=True) or 0.0,
        )


@dataclass(frozen=True)
class Resumed:
    """Training resumed from the state saved at ``step`` (its checkpoint ``checkpoint``):
    what an earlier attempt logged after that step was abandoned with it."""

    step: int
    checkpoint: str
    time: float = 0.0

    def to_json(self) -> dict:
        return {"type": "resume", **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict) -> "Resumed":
        step = _count(obj, "step")
        if step is None:
            raise RecordError("step is missing")
        return cls(step, safe_name(obj.get("checkpoint"), "checkpoint name", RecordError),
                   _number(obj, "time", optional=True) or 0.0)


def add_train_record(logs: list[TrainLog], record: "TrainLog | Resumed") -> None:
    """Fold a training record into the history: a resume drops what the abandoned attempt
    logged after its resume point, and a step at or before the last one (a Trainer resumed
    from a checkpoint) replaces the records from that step on: the latest attempt counts."""
    limit = record.step if isinstance(record, Resumed) else record.step - 1
    while logs and logs[-1].step > limit:
        logs.pop()
    if isinstance(record, TrainLog):
        logs.append(record)


def record_from_json(obj: Any) -> Metric | TrainLog | Resumed:
    """Parse one metrics.jsonl record (raises RecordError on a bad shape)."""
    if not isinstance(obj, dict):
        raise RecordError("record is not an object")
    kind = obj.get("type", "metric")
    if kind == "metric":
        return Metric.from_json(obj)
    if kind == "train":
        return TrainLog.from_json(obj)
    if kind == "resume":
        return Resumed.from_json(obj)
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
