"""The lines of metrics.jsonl: evaluated metrics, training records and resume points.

Each line is one typed record; ``record_from_json`` parses one (RecordError on a bad
shape or value) and ``add_train_record`` folds training records into the history of
the latest attempt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from overmem.rundir.fields import RecordError, count, number, shown, text, typed, value_problem
from overmem.rundir.names import safe_name

# Canonical split names; "validation"/"eval" are accepted as aliases of "val".
SPLIT_ALIASES = {"validation": "val", "eval": "val", "valid": "val", "dev": "val"}
SPLIT_ORDER = ("train", "val", "test")  # the monitored order; other splits follow by name

# What overmem's evaluator measures, and how a number summarises its samples.
METRIC_PPL = "ppl"  # perplexity of the reference answers
METRIC_ACC = "acc"  # generation accuracy
EVAL_METRICS = (METRIC_PPL, METRIC_ACC)
MEAN = "mean"  # the aggregate of overmem's own evaluation records
CI_LOW, CI_HIGH = "ci95_low", "ci95_high"  # a probe metric's 95% bootstrap interval
TRAINER_METRIC = "trainer/"  # prefix of a Trainer's own eval numbers other than the loss


def canonical_split(name: str) -> str:
    return SPLIT_ALIASES.get(name, name)


def ordered_splits(names) -> list[str]:
    """Split names in the monitored order (train, val, test), then the rest by name."""
    names = list(dict.fromkeys(canonical_split(n) for n in names))
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


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
    # accuracy only: each row of the split in order, "1" right, "0" wrong, "." not generated yet,
    # "-" no gold answer (the paired test of overmem.phases compares checkpoints on shared rows)
    grades: str | None = None
    looks: int | None = None  # adaptive evaluation: the look this record is (overmem.adaptive), else None

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
        if self.grades is not None:
            out["grades"] = self.grades
        if self.looks is not None:
            out["looks"] = self.looks
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Metric":
        checkpoint = safe_name(obj.get("checkpoint"), "checkpoint name", RecordError)
        split = canonical_split(safe_name(obj.get("split"), "split name", RecordError))
        metric = text(obj, "metric")
        value = obj.get("value")
        problem = value_problem(metric, value)
        if problem:
            raise RecordError(f"checkpoint {checkpoint}, split {split}: {metric} {shown(value)} {problem}")
        probe = typed(obj, "probe", (str,), None)
        n = count(obj, "n")
        if n == 0 and metric in EVAL_METRICS and not probe:
            raise RecordError(f"checkpoint {checkpoint}, split {split}: {metric} over n 0 rows is no measurement")
        grades = _grades(obj, metric, float(value), n, f"checkpoint {checkpoint}, split {split}")
        looks = count(obj, "looks")
        if looks is not None and not 1 <= looks <= MAX_LOOKS:
            raise RecordError(f"checkpoint {checkpoint}, split {split}: looks {looks} is not 1 to {MAX_LOOKS}")
        return cls(
            checkpoint=checkpoint,
            split=split,
            metric=metric,
            value=float(value),
            aggregate=typed(obj, "aggregate", (str,), ""),
            n=n,
            time=number(obj, "time", optional=True) or 0.0,
            probe=safe_name(probe, "probe name", RecordError) if probe else None,
            replaces=typed(obj, "replaces", (bool,), False),
            grades=grades,
            looks=looks,
        )


GRADE_RIGHT, GRADE_WRONG, GRADE_PENDING, GRADE_NONE = "1", "0", ".", "-"
MAX_GRADES = 10_000_000  # rows of one split an accuracy record can grade
MAX_LOOKS = 64


def grade_string(n_rows: int, correct: dict[int, bool], gradable) -> str:
    """The ``grades`` of a record: row i is right, wrong, pending or without gold answer."""
    return "".join(GRADE_NONE if i not in gradable else GRADE_PENDING if i not in correct
                   else GRADE_RIGHT if correct[i] else GRADE_WRONG for i in range(n_rows))


def extends(grades: str | None, earlier: str | None) -> bool:
    """``grades`` keeps every row ``earlier`` graded, with the same grade (a later look)."""
    if grades is None or earlier is None or len(grades) != len(earlier):
        return False
    return all(old == new for old, new in zip(earlier, grades) if old == GRADE_RIGHT or old == GRADE_WRONG)


def _grades(obj: dict, metric: str, value: float, n: int | None, where: str) -> str | None:
    """A record's per-row grades, checked against its value and n (a record someone else wrote)."""
    grades = typed(obj, "grades", (str,), None)
    if grades is None:
        return None
    if metric != METRIC_ACC or len(grades) > MAX_GRADES or set(grades) - set("10.-"):
        raise RecordError(f"{where}: grades {shown(grades)} is not a {METRIC_ACC} record's string of 1, 0, . and -")
    right, wrong = grades.count(GRADE_RIGHT), grades.count(GRADE_WRONG)
    if n != right + wrong or abs(value - right / max(n, 1)) > 1e-9:
        raise RecordError(f"{where}: grades hold {right} right of {right + wrong}, not {metric} {shown(value)} "
                          f"over n {shown(n)}")
    return grades


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
        return cls(
            step=count(obj, "step", optional=False),
            epoch=number(obj, "epoch"),
            loss=number(obj, "loss"),
            lr=number(obj, "lr"),
            total_steps=count(obj, "total_steps"),
            tokens_per_s=number(obj, "tokens_per_s", optional=True),
            time=number(obj, "time", optional=True) or 0.0,
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
        return cls(count(obj, "step", optional=False),
                   safe_name(obj.get("checkpoint"), "checkpoint name", RecordError),
                   number(obj, "time", optional=True) or 0.0)


@dataclass(frozen=True)
class Replaced:
    """The checkpoint ``checkpoint`` was made again (merge --force): the records before this line
    describe the one it replaced. Order in the file decides, not clocks (hosts disagree)."""

    checkpoint: str
    time: float = 0.0

    def to_json(self) -> dict:
        return {"type": "replaced", **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict) -> "Replaced":
        return cls(safe_name(obj.get("checkpoint"), "checkpoint name", RecordError),
                   number(obj, "time", optional=True) or 0.0)


STOP_BY = ("user", "rule")  # who stops a training: a person (watch's key) or the stop rule (train --stop-at)


@dataclass(frozen=True)
class Stop:
    """Stopping a training at its next checkpoint: a request (``done`` False, e.g. from watch's
    key) or what the trainer did (``done`` True: it stopped after ``checkpoint``), with why."""

    reason: str
    by: str = "user"
    done: bool = False
    checkpoint: str | None = None
    step: int | None = None
    time: float = 0.0

    def to_json(self) -> dict:
        return {"type": "stop", **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict) -> "Stop":
        by = obj.get("by", "user")
        if by not in STOP_BY:
            raise RecordError(f"a stop's 'by' {shown(by)} is not one of {', '.join(STOP_BY)}")
        done = typed(obj, "done", (bool,), False)
        checkpoint = obj.get("checkpoint")
        return cls(text(obj, "reason")[:500], by, done,
                   None if checkpoint is None else safe_name(checkpoint, "checkpoint name", RecordError),
                   count(obj, "step"), number(obj, "time", optional=True) or 0.0)


def add_train_record(logs: list[TrainLog], record: "TrainLog | Resumed") -> None:
    """Fold a training record into the history: a resume drops what the abandoned attempt
    logged after its resume point, and a step at or before the last one (a Trainer resumed
    from a checkpoint) replaces the records from that step on: the latest attempt counts."""
    limit = record.step if isinstance(record, Resumed) else record.step - 1
    while logs and logs[-1].step > limit:
        logs.pop()
    if isinstance(record, TrainLog):
        logs.append(record)


def record_from_json(obj: Any) -> Metric | TrainLog | Resumed | Replaced | Stop:
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
    if kind == "replaced":
        return Replaced.from_json(obj)
    if kind == "stop":
        return Stop.from_json(obj)
    raise RecordError(f"unknown record type {kind!r}")
