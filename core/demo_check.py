"""What the demo promises, checked on a finished demo run: a pure function of its summary.

The demo exists to show over-memorization unmistakably: black, then yellow,
then a long purple window in which validation log-ppl climbs to at least twice its
minimum while test accuracy stays within noise of its best, and a merge of an early
and a late checkpoint that brings test perplexity back down without losing accuracy.
``scripts/demo_seeds.py`` runs this on several seeds and thread counts, and
``tests/test_demo.py`` on the default run.
"""

from __future__ import annotations

from dataclasses import dataclass

from overmem.phases import Phase, Point, Thresholds, accuracy_is_high, smoothed_best
from overmem.summary import Summary

MIN_YELLOW = 2
MIN_PURPLE_WINDOW = 8
MIN_LAST_PURPLE_RATIO = 2.0


@dataclass(frozen=True)
class DemoFigures:
    """The numbers a demo run is judged by (val drives the phases; test is the benchmark)."""

    phases: tuple[str, ...]  # trajectory phases in order (ep0 first)
    yellow: int
    window: tuple[str, ...]  # the longest run of consecutive purple checkpoints
    overfit_before: int  # overfit checkpoints before the window starts
    overfit: int
    last_purple_ratio: float | None  # val log-ppl / its minimum at the window's last checkpoint
    window_test_acc: tuple[float, float] | None  # (min, max) test accuracy inside the window
    best_test_acc: float | None
    window_acc_held: bool  # every window checkpoint within z SE of the best test accuracy
    test_ppl_rise: float | None  # raw test ppl at the window's last checkpoint / minimum test ppl
    merge: str | None
    merge_test: tuple[float, float] | None  # (ppl, acc) of the merge on test
    latest_test: tuple[float, float] | None  # (ppl, acc) of the latest checkpoint on test
    merge_ok: bool

    def failures(self) -> list[str]:
        out = []
        if not self.phases or self.phases[0] != Phase.BLACK.value:
            out.append("ep0 is not black")
        if self.yellow < MIN_YELLOW:
            out.append(f"{self.yellow} yellow checkpoint(s), fewer than {MIN_YELLOW}")
        if len(self.window) < MIN_PURPLE_WINDOW:
            out.append(f"purple window of {len(self.window)}, shorter than {MIN_PURPLE_WINDOW}")
        if self.overfit_before:
            out.append(f"{self.overfit_before} overfit checkpoint(s) before the purple window")
        if self.last_purple_ratio is None or self.last_purple_ratio < MIN_LAST_PURPLE_RATIO:
            out.append(f"val log-ppl at the last purple checkpoint is {self.last_purple_ratio or 0:.2f}x its "
                       f"minimum, below {MIN_LAST_PURPLE_RATIO}x")
        if not self.window_acc_held:
            out.append("test accuracy inside the purple window falls clearly below its best")
        if not self.merge_ok:
            out.append("the merge does not lower test ppl below the latest checkpoint's at held accuracy")
        return out


def _longest_run(names: list[str], phases: list[str], phase: str) -> tuple[int, int]:
    """(start, end) indices (end exclusive) of the longest run of ``phase``."""
    best, start = (0, 0), None
    for i, p in enumerate(phases + [""]):
        if p == phase and start is None:
            start = i
        elif p != phase and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def demo_figures(summary: Summary, t: Thresholds = Thresholds()) -> DemoFigures:
    """Measure a finished demo run against its promises (see the module doc)."""
    advice = summary.advice
    rows = [r for r in summary.rows if r.checkpoint.on_trajectory]
    names = [r.name for r in rows]
    phases = [(advice.phases.of(n).phase.value if advice.phases.of(n) else "unknown") for n in names]
    start, end = _longest_run(names, phases, Phase.PURPLE.value)
    window = tuple(names[start:end])
    test = [Point(r.name, r.get("test").ppl, r.get("test").acc, r.get("test").n) for r in rows]
    with_acc = [p for p in test if p.acc is not None]
    best = smoothed_best(with_acc, t)
    inside = [p for p in test if p.name in window and p.acc is not None]
    held = bool(inside) and best is not None and all(
        accuracy_is_high(p.acc, p.n, best.acc, best.n, t) for p in inside)
    last = advice.phases.of(window[-1]) if window else None
    test_ppls = [p.ppl for p in test if p.ppl is not None]
    last_test = next((p for p in test if window and p.name == window[-1]), None)
    rise = last_test.ppl / min(test_ppls) if last_test and last_test.ppl and test_ppls else None
    merge_row = next((r for r in summary.rows if r.checkpoint.is_merge), None)
    latest = rows[-1] if rows else None
    merge_test = latest_test = None
    merge_ok = False
    if merge_row is not None and latest is not None:
        m, lt = merge_row.get("test"), latest.get("test")
        if None not in (m.ppl, m.acc, lt.ppl, lt.acc):
            merge_test, latest_test = (m.ppl, m.acc), (lt.ppl, lt.acc)
            merge_ok = m.ppl < lt.ppl and best is not None and accuracy_is_high(m.acc, m.n, best.acc, best.n, t)
    return DemoFigures(
        phases=tuple(phases),
        yellow=phases.count(Phase.YELLOW.value),
        window=window,
        overfit_before=phases[:start].count(Phase.OVERFIT.value) if window else phases.count(Phase.OVERFIT.value),
        overfit=phases.count(Phase.OVERFIT.value),
        last_purple_ratio=last.log_ratio if last else None,
        window_test_acc=(min(p.acc for p in inside), max(p.acc for p in inside)) if inside else None,
        best_test_acc=best.acc if best else None,
        window_acc_held=held,
        test_ppl_rise=rise,
        merge=merge_row.name if merge_row else None,
        merge_test=merge_test,
        latest_test=latest_test,
        merge_ok=merge_ok,
    )
