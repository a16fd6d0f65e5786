"""Phase of each checkpoint (black / yellow / purple / overfit): a pure function.

A checkpoint's accuracy is "high" when it is not clearly below the best one's: a
binomial standard error test on the difference when sample counts are known, a
relative tolerance otherwise. "The best" is the peak of a 3-checkpoint moving
average along the trajectory (n pooled), where a neighbour enters a checkpoint's
window only when its accuracy is consistent with the centre's (not clearly
different by the same test). The average keeps one lucky evaluation among twenty
from condemning its healthy neighbours; the consistency rule keeps the average
from crossing a real jump: the base model's 0% next to a sharp early peak would
otherwise drag that peak down, and checkpoints far below it would pass as "high".
No accuracy is "high" while the best is not clearly above the base model's (or
above zero when the base was not evaluated): a run whose accuracy never rose has
learned nothing to be healthy with, and every checkpoint is black. "Clearly above"
is the same z test with Agresti-Coull standard errors (two pseudo-successes and
failures per z^2/4, so 0 of 400 still has a spread) and a gain of at least
``min_gain``. Its perplexity is "high" when its log (the mean token NLL) exceeds
the run's minimum log-ppl by a factor. A factor on log-ppl
means the same for an 8B model at test ppl 3-5 and for a tiny model near 1.2; a
factor on raw ppl does not (the paper's 4.5x ppl is ~2.4x log-ppl; the tiny
demo's 1.2x ppl can be 2x log-ppl).

Where two checkpoints were graded on the same rows (records with per-row grades),
"clearly below" is the paired test: the mean of the per-row differences on the rows
both graded, with McNemar's standard error (it counts only the rows where they
disagree, so it is tighter than two independent binomials), Agresti-Min adjusted
(half a pseudo-row each way and one tie, so zero disagreements out of 50 still has a
spread). The best is a window of up to three checkpoints; its per-row value is their
mean. An accuracy is also high when the difference is shown to lie within the
equivalence margin ``acc_margin`` (its upper bound at z standard errors is at most the
margin): a checkpoint shown to be within 2 points of the best is practically as good,
even when a large sample proves it slightly below. Under adaptive evaluation each look
tests at its share of the error rate (overmem.sequential).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Sequence

from overmem.sequential import look_z
from overmem.units import fmt_pct, fmt_points, pct

# Log-ppl below this counts as this (a perfect model's log-ppl is 0, and every
# ratio to 0 would be infinite).
_MIN_LOG_PPL = 1e-3


class Phase(str, Enum):
    BLACK = "black"
    YELLOW = "yellow"
    PURPLE = "purple"
    OVERFIT = "overfit"
    UNKNOWN = "unknown"

    @property
    def meaning(self) -> str:
        return PHASE_MEANING[self]

    @property
    def rule(self) -> str:
        """When a checkpoint is in this phase, in a few words."""
        return PHASE_RULE[self]


PHASE_MEANING = {
    Phase.BLACK: "under-trained",
    Phase.YELLOW: "healthy",
    Phase.PURPLE: "over-memorized",
    Phase.OVERFIT: "over-fitted",
    Phase.UNKNOWN: "not enough metrics",
}
PHASE_RULE = {
    Phase.BLACK: "accuracy clearly below the best, or never learned",
    Phase.YELLOW: "accuracy high, log-ppl within factor x minimum",
    Phase.PURPLE: "accuracy high, log-ppl > factor x minimum",
    Phase.OVERFIT: "accuracy fell after its peak",
    Phase.UNKNOWN: "no accuracy or perplexity on the split yet",
}


def phase_legend() -> str:
    """Every phase, what it means and when it holds, in one line (help, reports)."""
    return " · ".join(f"{p.value}: {p.meaning} ({p.rule})" for p in Phase if p is not Phase.UNKNOWN)


@dataclass(frozen=True)
class Thresholds:
    """Every knob of the classifier and the recommendation, reported with results."""

    ppl_factor: float = 1.5  # high ppl: log-ppl > ppl_factor * minimum log-ppl
    band: float = 1.25  # recommendation band: log-ppl <= band * minimum log-ppl
    z: float = 2.0  # accuracy "clearly below": more than z binomial SE of the difference
    rel_tol: float = 0.10  # without sample counts: more than 10% below the best
    min_gain: float = 0.02  # the best accuracy must rise this much above the base's to count as learned
    acc_margin: float = 0.02  # equivalence margin: shown within this of the best is high (see the module doc)

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The thresholds in one sentence, as every front end prints them with results."""
        return (f"ppl factor {self.ppl_factor:g}x and band {self.band:g}x on log-ppl; accuracy clearly below the best "
                f"at {self.z:g} SE ({self.rel_tol:.0%} without n) unless shown within {fmt_points(self.acc_margin)}, "
                f"and learned only {fmt_points(self.min_gain)} or more above the base's")

    def validate(self) -> "Thresholds":
        from overmem.errors import UsageError

        for name, value in self.to_json().items():
            if not math.isfinite(value):
                raise UsageError(f"{name.replace('_', ' ')} must be a finite number, got {value}")
        if not self.ppl_factor > 1.0:
            raise UsageError(f"ppl factor must be above 1, got {self.ppl_factor}")
        if not self.band >= 1.0:
            raise UsageError(f"band must be at least 1, got {self.band}")
        if not self.z > 0:
            raise UsageError(f"z must be positive, got {self.z}")
        if not 0 <= self.rel_tol < 1:
            raise UsageError(f"relative tolerance must be in [0, 1), got {self.rel_tol}")
        if not 0 <= self.min_gain < 1:
            raise UsageError(f"min gain must be in [0, 1), got {self.min_gain}")
        if not 0 <= self.acc_margin < 1:
            raise UsageError(f"accuracy margin must be in [0, 1), got {self.acc_margin}")
        return self


@dataclass(frozen=True)
class Point:
    """One checkpoint's values on the split that drives the phases.

    Points come in trajectory order; ``on_trajectory`` is False for merges, which
    are judged against the trajectory but do not move its minimum or peak.
    """

    name: str
    ppl: float | None
    acc: float | None
    n: int | None = None
    on_trajectory: bool = True
    mergeable: bool = True
    base: bool = False  # the base model (epoch 0): what finetuning has to improve on
    parents: tuple[str, ...] = ()  # a merge's inputs
    grades: str | None = None  # per-row grades of the accuracy (overmem.rundir.lines.Metric.grades)
    looks: int | None = None  # adaptive evaluation: the look the accuracy is at (overmem.sequential)
    members: tuple["Point", ...] = ()  # the smoothed best: the checkpoints of its window

    @property
    def complete(self) -> bool:
        """Every gradable row graded (always, without per-row grades)."""
        return self.grades is None or "." not in self.grades


@dataclass(frozen=True)
class Verdict:
    name: str
    phase: Phase
    log_ratio: float | None  # log-ppl / minimum log-ppl
    acc_gap: float | None  # best accuracy - this accuracy
    reason: str


@dataclass(frozen=True)
class Phases:
    verdicts: tuple[Verdict, ...]
    min_name: str | None
    min_ppl: float | None
    best_name: str | None
    best_acc: float | None
    best_n: int | None
    onset: str | None
    learned: bool = True  # the best accuracy is clearly above the base's (or zero): see the module doc
    base_acc: float | None = None

    def of(self, name: str) -> Verdict | None:
        for v in self.verdicts:
            if v.name == name:
                return v
        return None


def log_ppl(ppl: float) -> float:
    return max(math.log(ppl), _MIN_LOG_PPL) if ppl > 0 else _MIN_LOG_PPL


def log_ratio(ppl: float, min_ppl: float) -> float:
    return log_ppl(ppl) / log_ppl(min_ppl)


def accuracy_is_high(acc: float, n: int | None, best: float, best_n: int | None, t: Thresholds,
                     z: float | None = None) -> bool:
    """True unless ``acc`` is clearly below ``best`` on independent samples, or when shown
    within the margin (see module doc); ``z`` defaults to the thresholds'."""
    if acc >= best:
        return True
    if n and best_n:
        se = math.sqrt(best * (1 - best) / best_n + acc * (1 - acc) / n)
        return _high(best - acc, se, t.z if z is None else z, t)
    return acc >= best * (1 - t.rel_tol)


def _high(gap: float, se: float, z: float, t: Thresholds) -> bool:
    """Not clearly below (gap within ``z`` standard errors), or shown within the margin (at the thresholds' z)."""
    return gap - z * se <= 0 or gap + t.z * se <= t.acc_margin


@dataclass(frozen=True)
class Gap:
    """How far a checkpoint's accuracy is below the best's, as its test sees it."""

    gap: float  # best - this: on the shared rows (paired) or on each one's own rows
    se: float | None  # its standard error (None: no sample counts)
    z: float  # the z it is judged at (overmem.sequential under adaptive evaluation)
    paired: int  # rows compared pairwise (0: independent samples)

    def below(self) -> bool:
        """Clearly below: more than z standard errors."""
        return self.se is not None and self.gap - self.z * self.se > 0

    def within(self, t: Thresholds) -> bool:
        """Shown within the equivalence margin: the upper bound at the thresholds' z (not the
        look's: see overmem.sequential) is at most ``t.acc_margin``."""
        return self.se is not None and self.gap + t.z * self.se <= t.acc_margin


def paired_gap(p: Point, members: Sequence[Point]) -> tuple[float, float, int] | None:
    """(mean difference, McNemar standard error, rows) of ``members``' mean grade minus ``p``'s,
    on the rows ``p`` and at least one member graded; None without per-row grades or when
    they cover under 90% of ``p``'s rows. Agresti-Min: half a pseudo-row of difference +1
    and -1 and one tie, so the error is never 0."""
    mine = p.grades
    theirs = [m.grades for m in members if m.grades is not None and mine is not None and len(m.grades) == len(mine)]
    if not theirs:
        return None
    total = squares = 0.0
    rows = own = 0
    for i, g in enumerate(mine):
        if g != "1" and g != "0":
            continue
        own += 1
        seen = [other[i] for other in theirs if other[i] == "1" or other[i] == "0"]
        if not seen:
            continue
        d = seen.count("1") / len(seen) - (g == "1")
        total += d
        squares += d * d
        rows += 1
    if not rows or rows < 0.9 * own:
        return None
    m = rows + 2
    mean = total / m
    return mean, math.sqrt(max((squares + 1) / m - mean * mean, 0.0) / m), rows


def gap_to_best(p: Point, best: Point, t: Thresholds) -> Gap:
    """``p``'s test against the best: paired on shared rows when both have per-row grades,
    else on independent samples, else without counts."""
    z = look_z(t.z, p.looks, p.complete)
    pair = paired_gap(p, best.members or (best,))
    if pair is not None:
        return Gap(pair[0], pair[1], z, pair[2])
    if p.n and best.n:
        return Gap(best.acc - p.acc, math.sqrt(best.acc * (1 - best.acc) / best.n + p.acc * (1 - p.acc) / p.n), z, 0)
    return Gap(best.acc - p.acc, None, z, 0)


def point_is_high(p: Point, best: Point, t: Thresholds) -> bool:
    """``p``'s accuracy is high against ``best`` (see the module doc)."""
    g = gap_to_best(p, best, t)
    if g.se is None:  # no sample counts: the relative tolerance
        return accuracy_is_high(p.acc, p.n, best.acc, best.n, t)
    return not g.below() or g.within(t)


def _ac_variance(acc: float, n: int, z: float) -> float:
    """Agresti-Coull variance of a proportion: never 0, even at 0 of n."""
    shrunk = (acc * n + z * z / 2) / (n + z * z)
    return shrunk * (1 - shrunk) / (n + z * z)


def rose_above(best: Point, base: Point | None, t: Thresholds) -> bool:
    """True when ``best``'s accuracy is clearly above ``base``'s (zero without a base): a
    gain of at least ``min_gain`` and beyond z Agresti-Coull standard errors."""
    floor = base.acc if base is not None and base.acc is not None else 0.0
    gain = best.acc - floor
    if gain < t.min_gain or gain <= 0:
        return False
    if best.n:
        var = _ac_variance(best.acc, best.n, t.z)
        if base is not None and base.acc is not None:
            if not base.n:
                return floor < best.acc * (1 - t.rel_tol)
            var += _ac_variance(floor, base.n, t.z)
        return gain > t.z * math.sqrt(var)
    return floor < best.acc * (1 - t.rel_tol)


def consistent(a: Point, b: Point, t: Thresholds) -> bool:
    """True when neither accuracy is clearly below the other (the test of ``accuracy_is_high``)."""
    return accuracy_is_high(a.acc, a.n, b.acc, b.n, t) and accuracy_is_high(b.acc, b.n, a.acc, a.n, t)


def smoothed_best(points: Sequence[Point], t: Thresholds = Thresholds()) -> Point | None:
    """The peak of the 3-point moving average of accuracy (pooled n), as a Point named
    after the window's centre; neighbours inconsistent with the centre stay out."""
    best = None
    for i, p in enumerate(points):
        window = [p] + [q for q in (points[i - 1] if i else None, points[i + 1] if i + 1 < len(points) else None)
                        if q is not None and consistent(p, q, t)]
        if all(w.n for w in window):
            n = sum(w.n for w in window)
            acc = sum(w.acc * w.n for w in window) / n
        else:
            n, acc = None, sum(w.acc for w in window) / len(window)
        if best is None or acc > best.acc:
            best = Point(p.name, p.ppl, acc, n, p.on_trajectory, p.mergeable, members=tuple(window))
    return best


def measured(points: Sequence[Point]) -> tuple[list[Point], list[Point], list[Point]]:
    """(trajectory, points with ppl, points with accuracy): the trajectory's, else all points'."""
    trajectory = [p for p in points if p.on_trajectory]
    with_ppl = [p for p in trajectory if p.ppl is not None] or [p for p in points if p.ppl is not None]
    with_acc = [p for p in trajectory if p.acc is not None] or [p for p in points if p.acc is not None]
    return trajectory, with_ppl, with_acc


def classify(points: Sequence[Point], t: Thresholds = Thresholds()) -> Phases:
    """Classify every point; see the module doc for the rules."""
    trajectory, with_ppl, with_acc = measured(points)
    min_p = min(with_ppl, key=lambda p: p.ppl) if with_ppl else None
    best_p = smoothed_best(with_acc, t)
    position = {p.name: i for i, p in enumerate(trajectory)}
    min_index = position.get(min_p.name, -1) if min_p else -1
    base = next((p for p in trajectory if p.base and p.acc is not None), None)
    # only once a finetuned checkpoint has accuracy can it have failed to rise above the base
    learned = best_p is None or not any(not p.base for p in with_acc) or rose_above(best_p, base, t)
    high = {
        p.name: learned and point_is_high(p, best_p, t)
        for p in points
        if p.acc is not None and best_p is not None
    }
    first_high = next((i for i, p in enumerate(trajectory) if high.get(p.name)), None)
    verdicts = []
    for p in points:
        index = position.get(p.name) if p.on_trajectory else None
        ratio = log_ratio(p.ppl, min_p.ppl) if p.ppl is not None and min_p else None
        gap = best_p.acc - p.acc if p.acc is not None and best_p else None
        verdict = _verdict(p, index, ratio, gap, high.get(p.name), first_high, min_index, best_p, t)
        if not learned and p.acc is not None:
            floor = f"the base's {fmt_pct(base.acc)}%" if base is not None else "zero"
            verdict = Verdict(p.name, Phase.BLACK, ratio, gap, _join(
                f"accuracy never rose clearly above {floor} (best {fmt_pct(best_p.acc)}%)",
                "" if ratio is None else f"log-ppl {ratio:.2f}x its minimum"))
        verdicts.append(verdict)
    onset = next(
        (v.name for v, p in zip(verdicts, points) if p.on_trajectory and v.phase is Phase.PURPLE), None
    )
    return Phases(
        verdicts=tuple(verdicts),
        min_name=min_p.name if min_p else None,
        min_ppl=min_p.ppl if min_p else None,
        best_name=best_p.name if best_p else None,
        best_acc=best_p.acc if best_p else None,
        best_n=best_p.n if best_p else None,
        onset=onset,
        learned=learned,
        base_acc=base.acc if base is not None else None,
    )


def _verdict(p, index, ratio, gap, acc_high, first_high, min_index, best_p, t) -> Verdict:
    ppl_text = "" if ratio is None else f"log-ppl {ratio:.2f}x its minimum"
    if p.acc is None and p.ppl is None:
        return Verdict(p.name, Phase.UNKNOWN, None, None, "no metrics on this split")
    if acc_high is False:
        gap_text = f"accuracy {fmt_points(gap)} below the best ({best_p.name}{_paired_text(p, best_p, t)})"
        after_peak = index is not None and first_high is not None and index > first_high
        if after_peak:
            return Verdict(p.name, Phase.OVERFIT, ratio, gap, _join(gap_text, "after its peak", ppl_text))
        return Verdict(p.name, Phase.BLACK, ratio, gap, _join(gap_text, ppl_text))
    if acc_high is None:
        return Verdict(p.name, Phase.UNKNOWN, ratio, gap, _join("no accuracy", ppl_text))
    if ratio is None:
        return Verdict(p.name, Phase.UNKNOWN, None, gap, "accuracy high, no perplexity")
    if ratio > t.ppl_factor:
        if index is not None and index < min_index:
            return Verdict(p.name, Phase.BLACK, ratio, gap, _join(ppl_text, "still falling"))
        return Verdict(
            p.name, Phase.PURPLE, ratio, gap, _join("accuracy high", ppl_text, f"> {t.ppl_factor:g}x")
        )
    return Verdict(p.name, Phase.YELLOW, ratio, gap, _join("accuracy high", ppl_text))


def _paired_text(p: Point, best_p: Point, t: Thresholds) -> str:
    """What the paired test saw, when it judged: its difference on the shared rows and the
    margin of error at the look's z (which may differ from the plain difference shown)."""
    g = gap_to_best(p, best_p, t)
    if not g.paired or g.se is None:
        return ""
    return f"; paired on {g.paired} rows: {fmt_points(g.gap)} ± {pct(g.z * g.se):.1f}"


def _join(*parts: str) -> str:
    return ", ".join(part for part in parts if part)
