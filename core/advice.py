"""The recommendation and the merge suggestion: pure functions of classified points.

Recipe: among checkpoints whose log-ppl lies within ``band`` times
the minimum, take the one with the highest accuracy (ties: the earliest). The advice
never contradicts the phases: when no checkpoint in the band has high accuracy, it
says so, takes the least over-memorized checkpoint whose accuracy is high (a yellow
one) and names the trade-off; when no checkpoint is yellow, or accuracy never rose
above the base's, it recommends none. Then it says what the naive rules (lowest
ppl, highest accuracy, the last checkpoint) would have picked, and suggests merging
the recommended checkpoint with the latest over-memorized one (their
mean delta keeps the early one's perplexity and the late one's accuracy),
unless that merge was evaluated and is itself over-memorized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from overmem.phases import Phase, Phases, Point, Thresholds, classify, log_ratio
from overmem.units import fmt_pct, fmt_points


@dataclass(frozen=True)
class Advice:
    split: str | None
    thresholds: Thresholds
    phases: Phases
    recommended: str | None
    merge: tuple[str, str] | None
    reasons: tuple[str, ...]
    naive: tuple[tuple[str, str | None], ...]  # (rule, checkpoint it picks)
    warnings: tuple[str, ...]


def _pct(acc: float) -> str:
    return f"{fmt_pct(acc)}%"


def advise(points: Sequence[Point], split: str | None, t: Thresholds = Thresholds()) -> Advice:
    """Recommend a checkpoint on ``split`` from its points (in trajectory order)."""
    phases = classify(points, t)
    full = [p for p in points if p.ppl is not None and p.acc is not None]
    reasons: list[str] = []
    naive: list[tuple[str, str | None]] = []
    recommended: str | None = None
    where = f"on {split}" if split else ""

    if not points or all(p.ppl is None and p.acc is None for p in points):
        reasons.append(f"no checkpoint has metrics {where} yet: nothing to recommend")
    elif not phases.learned:
        waiting = [p.name for p in points if p.acc is None and p.ppl is not None]
        reasons.append((f"waiting for the accuracy of {', '.join(waiting)}; so far " if waiting else "")
                       + _never_learned(phases, split))
    elif not full:
        recommended = _fallback(points, split, reasons)
    else:
        min_p = trajectory_minimum(points)
        band = [p for p in full if log_ratio(p.ppl, min_p.ppl) <= t.band]
        if not band:
            waiting = [p.name for p in points if p.acc is None and p.ppl is not None
                       and log_ratio(p.ppl, min_p.ppl) <= t.band]
            reasons.append(
                f"no checkpoint with both ppl and accuracy {where} lies within {t.band:g}x (log scale) of the "
                f"minimum ppl ({min_p.ppl:.4g} at {min_p.name}); waiting for the accuracy of {', '.join(waiting)}"
            )
            return _advice(points, phases, split, t, None, reasons, naive)
        top = max(band, key=lambda p: p.acc)  # max keeps the first of ties: the earliest
        band_text = (f"{len(band)} checkpoint{'s' if len(band) != 1 else ''} whose {split} ppl is within "
                     f"{t.band:g}x (log scale) of the minimum ({min_p.ppl:.4g} at {min_p.name})")
        if _high(phases, top):
            chosen = top
        else:
            chosen = _outside_band(full, top, band_text, phases, split, reasons)
        if chosen is None:
            return _advice(points, phases, split, t, None, reasons, naive)
        recommended = chosen.name
        if len(full) == 1:
            reasons.append(f"{chosen.name} is the only checkpoint with ppl and accuracy {where}")
        else:
            if chosen is top:
                reasons.append(f"{chosen.name}: highest {split} accuracy ({_pct(chosen.acc)}{_n(chosen)}) among "
                               f"the {band_text}")
            reasons.extend(_naive_reasons(points, chosen, min_p, phases, split, naive))
    return _advice(points, phases, split, t, recommended, reasons, naive)


def _high(phases: Phases, p: Point) -> bool:
    """Accuracy high by the phases (yellow or purple): the advice never calls another kind healthy."""
    verdict = phases.of(p.name)
    return verdict is not None and verdict.phase in (Phase.YELLOW, Phase.PURPLE)


def _never_learned(phases: Phases, split) -> str:
    floor = f"the base's {_pct(phases.base_acc)}" if phases.base_acc is not None else "zero"
    return (f"{split} accuracy never rose clearly above {floor} (best {_pct(phases.best_acc)} around "
            f"{phases.best_name}): no checkpoint has learned the task, so none is recommended; check the data, "
            "the answer format (the gen sidecars show what was read from each answer) and the learning rate")


def _outside_band(full, top: Point, band_text: str, phases: Phases, split, reasons: list[str]) -> Point | None:
    """No checkpoint in the band has high accuracy: the least over-memorized yellow one, with
    the trade-off in words, or None when no checkpoint is yellow."""
    best = f"{_pct(phases.best_acc)} around {phases.best_name}"
    reasons.append(f"no checkpoint among the {band_text} has high {split} accuracy: the most accurate of them, "
                   f"{top.name}, has {_pct(top.acc)}{_n(top)}, {fmt_points(phases.best_acc - top.acc)} below the "
                   f"best ({best})")
    ratio = {v.name: v.log_ratio for v in phases.verdicts}
    yellow = [p for p in full if (v := phases.of(p.name)) is not None and v.phase is Phase.YELLOW]
    if not yellow:
        purple = [p for p in full if (v := phases.of(p.name)) is not None and v.phase is Phase.PURPLE]
        least = min(purple, key=lambda p: ratio[p.name]) if purple else None
        reasons.append("no checkpoint is healthy, so none is recommended" + (
            f"; the trade-off: {top.name} costs {fmt_points(phases.best_acc - top.acc)} of accuracy at log-ppl "
            f"{ratio[top.name]:.2f}x, {least.name} (the least over-memorized with high accuracy) keeps accuracy at "
            f"log-ppl {ratio[least.name]:.2f}x" if least is not None else ""))
        return None
    chosen = min(yellow, key=lambda p: (ratio[p.name], -p.acc))
    reasons.append(f"{chosen.name}: the least over-memorized checkpoint with high {split} accuracy "
                   f"({_pct(chosen.acc)}{_n(chosen)}): log-ppl {ratio[chosen.name]:.2f}x its minimum, outside the "
                   f"band but below the over-memorization threshold")
    reasons.append(f"the trade-off: {top.name} keeps log-ppl at {ratio[top.name]:.2f}x but costs "
                   f"{fmt_points(phases.best_acc - top.acc)} of accuracy; {chosen.name} is "
                   f"{fmt_points(max(phases.best_acc - chosen.acc, 0.0))} below the best at log-ppl "
                   f"{ratio[chosen.name]:.2f}x")
    return chosen


def trajectory_minimum(points: Sequence[Point]) -> Point:
    """The lowest-ppl point of the training trajectory (merges do not move the band), else of all."""
    with_ppl = [p for p in points if p.ppl is not None]
    return min([p for p in with_ppl if p.on_trajectory] or with_ppl, key=lambda p: p.ppl)


def _advice(points, phases: Phases, split, t: Thresholds, recommended, reasons: list, naive: list) -> Advice:
    merge, tried = _merge_pair(points, phases, recommended)
    if merge:
        reasons.append(
            f"merge {merge[0]} + {merge[1]}: average the deltas of a healthy and an over-memorized "
            "checkpoint (the method's remedy); overmem merge can do it exactly"
        )
    elif tried is not None:
        verdict = phases.of(tried.name)
        reasons.append(f"{tried.name} was evaluated and is itself over-memorized (log-ppl "
                       f"{verdict.log_ratio:.2f}x its minimum): it is no remedy, so no merge is suggested")
    return Advice(
        split=split,
        thresholds=t,
        phases=phases,
        recommended=recommended,
        merge=merge,
        reasons=tuple(reasons),
        naive=tuple(naive),
        warnings=tuple(_warnings(points, phases, split)),
    )


def _n(p: Point) -> str:
    return f", n={p.n}" if p.n else ""


def _fallback(points: Sequence[Point], split: str | None, reasons: list[str]) -> str:
    with_acc = [p for p in points if p.acc is not None]
    if with_acc:
        best = max(with_acc, key=lambda p: p.acc)
        reasons.append(
            f"{best.name}: highest {split} accuracy; no perplexity on {split}, so an over-memorized "
            "checkpoint cannot be told apart (overmem eval measures it)"
        )
        return best.name
    lowest = min((p for p in points if p.ppl is not None), key=lambda p: p.ppl)
    reasons.append(
        f"{lowest.name}: lowest {split} ppl; no generation accuracy on {split}, and the method warns that "
        "ppl alone picks too early (overmem eval measures accuracy by generating answers)"
    )
    return lowest.name


def _naive_reasons(points, chosen, min_p, phases: Phases, split, naive) -> list[str]:
    out = []
    full = [p for p in points if p.ppl is not None and p.acc is not None]
    naive.append(("lowest ppl", min_p.name))
    if min_p.name != chosen.name:
        if min_p.acc is not None and min_p.acc < chosen.acc:
            delta = f"{fmt_points(chosen.acc - min_p.acc)} less accurate"
        else:
            delta = "no more accurate"
        out.append(f"lowest {split} ppl picks {min_p.name}, {delta}")
    top = max(full, key=lambda p: p.acc)
    naive.append(("highest accuracy", top.name))
    if top.name != chosen.name:
        out.append(f"highest {split} accuracy picks {top.name}, {_describe(top, phases)}")
    trajectory = [p for p in points if p.on_trajectory]
    last = trajectory[-1] if trajectory else None
    naive.append(("last checkpoint", last.name if last else None))
    if last is not None and last.name not in (chosen.name, top.name):
        out.append(f"the last checkpoint {last.name} is {_describe(last, phases)}")
    return out


def _describe(p: Point, phases: Phases) -> str:
    verdict = phases.of(p.name)
    if verdict is None:
        return "unclassified"
    text = f"{verdict.phase.value} ({verdict.phase.meaning})"
    if verdict.log_ratio is not None and phases.min_ppl is not None and p.ppl is not None:
        text += f": ppl {p.ppl:.4g} vs minimum {phases.min_ppl:.4g}, log-ppl {verdict.log_ratio:.2f}x"
    if verdict.acc_gap and verdict.acc_gap >= 0.0005:
        text += f", {fmt_points(verdict.acc_gap)} below the best accuracy"
    return text


def _merge_pair(points, phases: Phases, recommended: str | None) -> tuple[tuple[str, str] | None, Point | None]:
    """(the recommended checkpoint, the latest purple one) when the recommended is a yellow
    checkpoint of the trajectory; None, with the merge that was tried, when that merge was
    evaluated and is purple itself."""
    mergeable = [p for p in points if p.on_trajectory and p.mergeable]
    phase = {v.name: v.phase for v in phases.verdicts}
    purple = [p for p in mergeable if phase.get(p.name) is Phase.PURPLE]
    if not purple or recommended not in {p.name for p in mergeable} or phase.get(recommended) is not Phase.YELLOW:
        return None, None
    pair = (recommended, purple[-1].name)
    tried = next((p for p in points if not p.on_trajectory and set(p.parents) == set(pair)
                  and phase.get(p.name) is Phase.PURPLE), None)
    return (None, tried) if tried is not None else (pair, None)


def _warnings(points, phases: Phases, split) -> list[str]:
    if not phases.learned:
        floor = "the base's" if phases.base_acc is not None else "zero"
        return [f"{split} accuracy never rose clearly above {floor}: every checkpoint is under-trained"]
    if not phases.onset:
        return []
    trajectory = [p for p in points if p.on_trajectory and p.ppl is not None]
    latest = trajectory[-1]
    verdict = phases.of(latest.name)
    if verdict is None or verdict.phase is not Phase.PURPLE:
        now = f"{latest.name} is {verdict.phase.meaning}" if verdict else f"{latest.name} has no verdict"
        if verdict is not None and verdict.phase is Phase.OVERFIT:
            now += " (its accuracy is now clearly below the best too)"
        return [f"{split} ppl rose while accuracy held from {phases.onset} on (over-memorized); {now}"]
    return [
        f"{split} ppl {latest.ppl / phases.min_ppl:.2f}x its minimum (log-ppl {verdict.log_ratio:.2f}x) "
        f"while accuracy is flat: over-memorizing since {phases.onset}"
    ]
