"""Adaptive evaluation: how many rows each checkpoint still needs generated (pure functions).

Perplexity is one forward pass; generation is what evaluating costs, and most of it
cannot change a verdict. Every checkpoint is graded on the gradable rows of a split in
one fixed order (``row_order``: rows sorted by a keyed hash of their index, the same
for every checkpoint and every run, so two checkpoints are compared on the same
questions and a subset keeps the order of the whole), after each step of a fixed
schedule of looks (``schedule``: 32 rows, then doubling, then the whole split, the
cap). ``plan`` says which checkpoints need their next look:

- the checkpoints that can be the recommendation (log-ppl inside the band, and not
  clearly below the band's most accurate) and the window of the best accuracy (the
  reference every other checkpoint is compared with) are generated up to the cap: the
  recommendation is the most accurate of the band, a ranking no early stop can settle;
- every other checkpoint stops as soon as its verdict is settled at its look's z
  (overmem.sequential): its accuracy is clearly below the best's (the paired test of
  overmem.phases), or shown within the equivalence margin of it. Its phase needs
  nothing more: it is black or over-fitted, or high and then yellow or purple by its
  perplexity alone.

The plan is made again after every round against the best as it stands, so a
checkpoint settled against an earlier best is looked at again when the best moves.
Rows are graded once: a round generates only the rows of the order a checkpoint has
not graded yet.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from overmem.phases import Point, Thresholds, gap_to_best, log_ratio, measured, rose_above, smoothed_best
from overmem.sequential import MAX_INTERIM

FIRST_LOOK = 32  # rows at the first look: the base's 0% against a best of 99% is settled there


def row_order(rows: Iterable[int]) -> list[int]:
    """The order every checkpoint grades ``rows`` (row indices) in: by a keyed hash of the index."""
    return sorted(rows, key=lambda i: hashlib.blake2b(str(i).encode(), digest_size=8, key=b"overmem-rows").digest())


def schedule(cap: int, first: int = FIRST_LOOK) -> list[int]:
    """Row counts at which a checkpoint is looked at: ``first``, doubling, then ``cap``
    (at most MAX_INTERIM looks before it)."""
    looks, n = [], first
    while n < cap and len(looks) < MAX_INTERIM:
        looks.append(n)
        n *= 2
    return looks + [cap]


def next_look(n: int, cap: int) -> int:
    """The row count of the first look after ``n`` graded rows."""
    return next(look for look in schedule(cap) if look > n) if n < cap else cap


def references(points: Sequence[Point], t: Thresholds) -> tuple[Point | None, set[str]]:
    """The best (smoothed, as classify finds it) and the checkpoints generated up to the cap:
    its window, every checkpoint whose log-ppl lies inside the band and is not clearly below
    the band's most accurate, and the base while the best is not clearly above it (the rule
    that decides whether the run learned anything, overmem.phases.rose_above)."""
    trajectory, with_ppl, with_acc = measured(points)
    best = smoothed_best(with_acc, t)
    keep = {m.name for m in best.members} if best is not None else set()
    base = next((p for p in trajectory if p.base and p.acc is not None), None)
    if base is not None and best is not None and not rose_above(best, base, t):
        keep.add(base.name)
    if with_ppl:
        low = min(p.ppl for p in with_ppl)
        band = [p for p in points if p.ppl is not None and log_ratio(p.ppl, low) <= t.band]
        graded = [p for p in band if p.acc is not None]
        top = max(graded, key=lambda p: p.acc) if graded else None
        # a band member clearly below the band's most accurate cannot be the recommendation
        keep |= {p.name for p in band if top is None or p.acc is None or not gap_to_best(p, top, t).below()}
    return best, keep


def settled(p: Point, best: Point | None, t: Thresholds) -> bool:
    """``p``'s verdict cannot change at its look: clearly below the best, or within the margin."""
    if best is None or p.acc is None:
        return False
    g = gap_to_best(p, best, t)
    return g.below() or g.within(t)


def plan(points: Sequence[Point], graded: dict[str, int], cap: int, t: Thresholds = Thresholds()) -> dict[str, int]:
    """name -> the rows it should have graded after the next round, for every checkpoint that
    needs more (the others are settled or complete). ``points``: the split's checkpoints in
    trajectory order, with the accuracy of the rows graded so far; ``graded``: rows graded."""
    out = {}
    best, keep = references(points, t)
    for p in points:
        n = graded.get(p.name, 0)
        if n >= cap:
            continue
        if n == 0 or p.acc is None or p.name in keep or not settled(p, best, t):
            out[p.name] = next_look(n, cap)
    return out
