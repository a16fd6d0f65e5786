"""Per-checkpoint, per-split metric table built from a run snapshot (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from overmem.rundir.records import CheckpointInfo, Run

# Which perplexity aggregate a table shows, in order of preference. "mean" is the
# mean of per-sample ppl, as the paper reports; "token" is exp(token-weighted NLL),
# the only one an HF Trainer's eval_loss gives.
PPL_AGGREGATES = ("mean", "token", "median", "")


@dataclass(frozen=True)
class SplitValues:
    """Latest ppl and accuracy of one checkpoint on one split."""

    ppl: float | None = None
    acc: float | None = None
    n: int | None = None
    ppl_n: int | None = None
    ppl_aggregate: str | None = None


@dataclass(frozen=True)
class Row:
    checkpoint: CheckpointInfo
    splits: Mapping[str, SplitValues] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.checkpoint.name

    def get(self, split: str) -> SplitValues:
        return self.splits.get(split) or SplitValues()


def build_table(run: Run, ppl_aggregate: str = "mean") -> tuple[Row, ...]:
    """One row per checkpoint (in trajectory order, merges last), latest values per split.

    Checkpoints that only appear in metrics (no folder, e.g. a deleted one) get a
    row too, so nothing evaluated disappears from views.
    """
    order = (ppl_aggregate,) + tuple(a for a in PPL_AGGREGATES if a != ppl_aggregate)
    latest: dict[tuple, tuple] = {}
    for m in run.metrics:
        if m.probe is not None or m.metric not in ("ppl", "acc"):
            continue
        latest[(m.checkpoint, m.split, m.metric, m.aggregate)] = (m.value, m.n)
    values: dict[str, dict[str, dict]] = {}
    for (ckpt, split, metric, aggregate), (value, n) in latest.items():
        cell = values.setdefault(ckpt, {}).setdefault(split, {})
        if metric == "acc":
            cell["acc"], cell["n"] = value, n
        elif aggregate in order:
            rank = order.index(aggregate)
            if rank < cell.get("_rank", len(order)):
                cell.update(ppl=value, ppl_n=n, ppl_aggregate=aggregate, _rank=rank)
    known = {c.name for c in run.checkpoints}
    checkpoints = list(run.checkpoints) + [
        CheckpointInfo(name=name, kind="unknown") for name in values if name not in known
    ]
    rows = []
    for ckpt in checkpoints:
        splits = {
            split: SplitValues(**{k: v for k, v in cell.items() if not k.startswith("_")})
            for split, cell in values.get(ckpt.name, {}).items()
        }
        rows.append(Row(ckpt, splits))
    return tuple(rows)


def available_splits(rows: tuple[Row, ...]) -> tuple[str, ...]:
    """Splits with at least one ppl or accuracy value, val/test/train first."""
    seen = {s for row in rows for s, v in row.splits.items() if v.ppl is not None or v.acc is not None}
    preferred = [s for s in ("train", "val", "test") if s in seen]
    return tuple(preferred + sorted(seen - set(preferred)))
