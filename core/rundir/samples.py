"""Typed per-sample records of the sidecar files (samples/<checkpoint>/<split>.<part>.jsonl).

The evaluator writes them and the watch screen's detail view reads them through
these classes; nothing addresses their fields by string keys elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

PPL, GEN, ROWS = "ppl", "gen", "rows"


@dataclass(frozen=True)
class PplSample:
    """The reference's summed NLL over its scored tokens (``truncated``: cut by max_len)."""

    idx: int
    nll_sum: float
    n_tokens: int
    truncated: bool = False


@dataclass(frozen=True)
class GenSample:
    """A greedy generation, the answer read from it, the gold answer and the verdict."""

    idx: int
    generation: str
    extracted: str | None
    gold: str | None
    correct: bool


def to_rows(records) -> list[dict]:
    return [asdict(r) for r in records]


def from_rows(cls, rows: list[dict]) -> list:
    known = {f.name for f in fields(cls)}
    return [cls(**{k: v for k, v in row.items() if k in known}) for row in rows]
