"""The latest evaluated values of every checkpoint on every split, from a run snapshot (pure).

One perplexity aggregate per split: perplexities of different kinds (overmem's mean
of per-sample ppl, its token-weighted ppl, a Trainer's eval_loss) are never compared
in one classification. overmem's own "mean" when every checkpoint on the split has
it, else the aggregate that covers the most checkpoints; the ones lacking it are named
in ``missing`` (their ppl stays empty until they are evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from overmem.errors import UnknownMetric
from overmem.rundir.lines import TRAINER_METRIC, Metric, ordered_splits
from overmem.rundir.records import CheckpointInfo, Run

# Preference among ppl aggregates. "mean": the mean of per-sample perplexities (the
# paper's number); "token": exp of the token-weighted mean NLL; "median": the median
# per-sample ppl; "trainer": exp(eval_loss) as a Hugging Face Trainer logs it (a mean
# of per-batch mean token losses).
PPL_AGGREGATES = ("mean", "token", "median", "trainer", "")
AGGREGATE_NAMES = {
    "mean": "mean of per-sample ppl",
    "token": "token-weighted ppl",
    "median": "median per-sample ppl",
    "trainer": "exp(Trainer eval_loss)",
    "": "ppl",
}


@dataclass(frozen=True)
class SplitValues:
    """Latest ppl and accuracy of one checkpoint on one split."""

    ppl: float | None = None
    acc: float | None = None
    n: int | None = None
    ppl_n: int | None = None
    ppl_aggregate: str | None = None
    grades: str | None = None  # accuracy's per-row grades (overmem.rundir.lines.Metric.grades)
    looks: int | None = None  # the adaptive look the accuracy is at (None: a fixed-n evaluation)


@dataclass(frozen=True)
class CheckpointValues:
    """One checkpoint's latest values on every split (a row of ``Summary.rows`` and of every table)."""

    checkpoint: CheckpointInfo
    splits: Mapping[str, SplitValues] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.checkpoint.name

    def get(self, split: str) -> SplitValues:
        return self.splits.get(split) or SplitValues()


@dataclass(frozen=True)
class Aggregate:
    """The ppl aggregate a split is judged on, and the checkpoints that lack it."""

    name: str
    missing: tuple[str, ...] = ()


OWN_ACC = "acc"  # overmem's own generation accuracy (records' metric name)
MAX_METRIC_NAME = 200


def accuracy_series(run: Run, name: str | None) -> dict[str, str]:
    """split -> the records' metric that is the split's accuracy, when ``name`` picks a
    Trainer-logged metric the user vouches for as generation accuracy (empty: overmem's own).

    ``name`` as the Trainer logged it (``eval_accuracy`` is val's, ``eval_gsm8k_accuracy``
    gsm8k's, by the Trainer's naming) or as overmem shows it (``accuracy``: on every split
    that logged it); ``acc`` is overmem's own. UnknownMetric when the run logged no such metric.
    """
    if name is None or name == OWN_ACC:
        return {}
    if not isinstance(name, str) or not name or len(name) > MAX_METRIC_NAME:
        raise UnknownMetric(f"--acc-metric {str(name)[:80]!r} is not a metric name")
    logged = {(m.split, m.metric[len(TRAINER_METRIC):]) for m in run.metrics
              if m.probe is None and m.metric.startswith(TRAINER_METRIC)}
    key = name[len(TRAINER_METRIC):] if name.startswith(TRAINER_METRIC) else name
    if key.startswith("eval_"):
        key = key[len("eval_"):]
        # the Trainer's own rule: eval_<split>_<metric> for a split it evaluated, else val's
        split = next((s for s in sorted({s for s, _ in logged}, key=len, reverse=True)
                      if key.startswith(s + "_") and (s, key[len(s) + 1:]) in logged), None)
        key = key[len(split) + 1:] if split is not None else key
        split = split or "val"
        found = {split: TRAINER_METRIC + key} if (split, key) in logged else {}
    else:
        found = {split: TRAINER_METRIC + key for split, k in logged if k == key}
    if not found:
        have = ", ".join(sorted({k for _, k in logged})) or "none"
        raise UnknownMetric(f"--acc-metric {name}: this run has no such Trainer metric (logged: {have})")
    return found


def _latest(run: Run, accuracy: Mapping[str, str] = {}) -> dict[tuple, Metric]:
    """(checkpoint, split, metric, aggregate) -> the latest ppl and accuracy records;
    ``accuracy`` (split -> a Trainer metric) stands in for overmem's accuracy on its splits."""
    latest: dict[tuple, tuple] = {}
    for m in run.metrics:
        if m.probe is not None:
            continue
        if m.split in accuracy and m.metric in (OWN_ACC, accuracy[m.split]):
            if m.metric == accuracy[m.split]:
                if not 0.0 <= m.value <= 1.0:
                    raise UnknownMetric(f"--acc-metric {m.metric[len(TRAINER_METRIC):]} is not an accuracy: "
                                        f"{m.checkpoint} logged {m.value} on {m.split} (accuracy is 0 to 1, or %)")
                latest[(m.checkpoint, m.split, OWN_ACC, m.aggregate)] = m
        elif m.metric in ("ppl", OWN_ACC):
            latest[(m.checkpoint, m.split, m.metric, m.aggregate)] = m
    return latest


def choose_aggregates(latest: dict[tuple, Metric], preferred: str = "mean") -> dict[str, Aggregate]:
    """Per split, the one ppl aggregate its checkpoints are compared on (see the module doc)."""
    order = (preferred,) + tuple(a for a in PPL_AGGREGATES if a != preferred)
    have: dict[str, dict[str, set]] = {}
    for (ckpt, split, metric, aggregate) in latest:
        if metric == "ppl":
            have.setdefault(split, {}).setdefault(aggregate, set()).add(ckpt)
    out = {}
    for split, by_agg in have.items():
        everyone = set().union(*by_agg.values())
        ranked = sorted(by_agg, key=lambda a: (-len(by_agg[a]), order.index(a) if a in order else len(order), a))
        full = [a for a in order if by_agg.get(a) == everyone]
        name = full[0] if full else ranked[0]
        out[split] = Aggregate(name, tuple(sorted(everyone - by_agg[name])))
    return out


def build_rows(run: Run, ppl_aggregate: str = "mean", accuracy: Mapping[str, str] = {}
               ) -> tuple[tuple[CheckpointValues, ...], dict[str, Aggregate]]:
    """One row per checkpoint (in trajectory order, merges last), latest values per split,
    and the aggregate chosen for each split; ``accuracy`` as in ``_latest``.

    Checkpoints that only appear in metrics (no folder, e.g. a deleted one) get a
    row too, so nothing evaluated disappears from views.
    """
    latest = _latest(run, accuracy)
    aggregates = choose_aggregates(latest, ppl_aggregate)
    values: dict[str, dict[str, dict]] = {}
    for (ckpt, split, metric, aggregate), m in latest.items():
        cell = values.setdefault(ckpt, {}).setdefault(split, {})
        if metric == "acc":
            cell.update(acc=m.value, n=m.n, grades=m.grades, looks=m.looks)
        elif aggregate == aggregates[split].name:
            cell.update(ppl=m.value, ppl_n=m.n, ppl_aggregate=aggregate)
    known = {c.name for c in run.checkpoints}
    checkpoints = list(run.checkpoints) + [
        CheckpointInfo(name=name, kind="unknown") for name in values if name not in known
    ]
    rows = tuple(CheckpointValues(ckpt, {split: SplitValues(**cell)
                                         for split, cell in values.get(ckpt.name, {}).items()})
                 for ckpt in checkpoints)
    return rows, aggregates


def x_of(row: CheckpointValues) -> float | None:
    """Where a checkpoint sits on the trajectory's x axis: its epoch, else its step."""
    ckpt = row.checkpoint
    if ckpt.epoch is not None:
        return float(ckpt.epoch)
    return float(ckpt.step) if ckpt.step is not None else None


def trainer_values(run: Run) -> dict[tuple[str, str, str], float]:
    """(checkpoint, split, metric) -> the latest value of a Trainer's own eval numbers (metric
    names keep their ``trainer/`` prefix)."""
    return {(m.checkpoint, m.split, m.metric): m.value for m in run.metrics
            if m.metric.startswith(TRAINER_METRIC) and m.probe is None}


def available_splits(rows: tuple[CheckpointValues, ...]) -> tuple[str, ...]:
    """Splits with at least one ppl or accuracy value, train/val/test first."""
    seen = {s for row in rows for s, v in row.splits.items() if v.ppl is not None or v.acc is not None}
    return tuple(ordered_splits(seen))
