"""When will the run turn purple? A forecast of the onset of over-memorization (pure).

After the driving split's log-ppl minimum, the log-ppl ratio (log-ppl over its
minimum) rises towards the purple threshold ``ppl_factor``. The rise is convex in
practice (slow at first, then faster), so one curve fitted to a few early points
says little. The forecast brackets the crossing between two continuations of the
rise seen so far, each a robust (Theil-Sen: median of pairwise slopes) fit:

- ``exponential``: the excess ratio - 1 grows by a constant factor per epoch
  (a straight line in log(ratio - 1)); an accelerating rise crosses early;
- ``linear``: the ratio grows by a constant step per epoch, the slope of the
  latest half of the rise; an accelerating rise crosses later than this says only
  if it slows down.

The point forecast is the exponential crossing (the backtest's best); the interval runs
from the earliest to the latest crossing of either fit over all its pairwise slopes, so
few or noisy points give a wide interval. Points within ``EXP_FLOOR`` of the minimum
are left out of the exponential fit: on a log scale their noise would dominate it.
Time is measured in training progress, not epochs, where the run logged its learning
rate: the cumulative learning rate (the sum of the step sizes so far), extrapolated to
the end of the schedule from the latest logged rates. Memorization advances with the
steps taken, so a rise slows with a decaying schedule, and a crossing that needs more
progress than the schedule has left is forecast as none before the training ends.
No forecast before ``MIN_POINTS`` evaluated checkpoints after the minimum, and
none once a checkpoint is purple: then the onset is a fact. A rise that has not
started (no positive slope) forecasts no crossing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

MIN_POINTS = 3  # evaluated checkpoints after the minimum before any forecast
METHOD = "theil-sen exponential/linear bracket on the log-ppl ratio"
# Chosen by benchmarks/forecast.py over the demo on seeds 0-4, lr 6e-4, lr 1.5e-4 and MAR:
LOW_Q, HIGH_Q = 0, 100  # the interval spans every pairwise slope: with 3-5 points, fewer undercover
EXP_FLOOR = 0.02  # points within 2% of the minimum are noise around it; on a log scale they would dominate


@dataclass(frozen=True)
class Schedule:
    """Training progress (cumulative learning rate) against epoch: logged up to ``now``, then
    extrapolated linearly from the latest rates to the schedule's last step."""

    epochs: tuple[float, ...]
    progress: tuple[float, ...]  # non-decreasing
    now: float  # the latest logged epoch
    end: float  # the schedule's last epoch

    def at(self, epoch: float) -> float:
        return _interpolate(epoch, self.epochs, self.progress)

    def epoch_of(self, progress: float) -> float:
        """The epoch where ``progress`` is reached (inf when the schedule ends before it)."""
        if not math.isfinite(progress) or progress > self.progress[-1] + 1e-12:
            return math.inf
        return _interpolate(progress, self.progress, self.epochs)


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def schedule_from_logs(logs: Sequence[tuple[int, float, float]], total_steps: int | None) -> Schedule | None:
    """The schedule from training records (step, epoch, lr) in step order and the planned total
    steps; None without at least two records with a rate."""
    logs = [(s, e, lr) for s, e, lr in logs if s > 0 and e > 0 and lr is not None and lr >= 0]
    if len(logs) < 2 or not total_steps or total_steps < logs[-1][0]:
        return None
    per_epoch = logs[-1][0] / logs[-1][1]
    steps, rates = [0] + [s for s, _, _ in logs], [logs[0][2]] + [lr for _, _, lr in logs]
    (s0, r0), (s1, r1) = (steps[-2], rates[-2]), (steps[-1], rates[-1])
    slope = (r1 - r0) / (s1 - s0) if s1 > s0 else 0.0
    gap = max(1, round((s1 - steps[1]) / max(len(logs) - 1, 1)))
    future = list(range(s1 + gap, total_steps, gap)) + ([total_steps] if total_steps > s1 else [])
    steps += future
    rates += [max(r1 + slope * (s - s1), 0.0) for s in future]
    progress = [0.0]
    for (a, ra), (b, rb) in zip(zip(steps, rates), zip(steps[1:], rates[1:])):
        progress.append(progress[-1] + (b - a) * (ra + rb) / 2)
    return Schedule(tuple(s / per_epoch for s in steps), tuple(progress), logs[-1][1], total_steps / per_epoch)


@dataclass(frozen=True)
class Forecast:
    onset: float | None  # the epoch (or step) where log-ppl is expected to cross the threshold; None: no rise
    low: float | None
    high: float | None  # None: no crossing within any continuation of the rise seen so far
    basis: tuple[str, ...]  # the checkpoints fitted: the minimum and every one after it
    factor: float
    method: str = METHOD
    end: float | None = None  # the schedule's last epoch, when known
    def to_json(self) -> dict:
        """The ``recommend --json`` form; an onset beyond the end of the schedule is null with
        ``"before_end": false``."""
        return {"onset_epoch": _rounded(self.onset), "low": _rounded(self.low), "high": _rounded(self.high),
                "from": list(self.basis), "method": self.method,
                "before_end": self.onset is not None and math.isfinite(self.onset)}

    def describe(self, unit: str = "ep") -> str:
        """"purple expected at ep19-ep24 (from ep6-ep9)" or why none is expected yet."""
        since = f"from {self.basis[0]}-{self.basis[-1]}"
        if self.onset is None:
            return f"no purple phase expected: log-ppl is not rising ({since})"
        if not math.isfinite(self.onset):
            end = f" (ep{self.end:g})" if self.end else ""
            return f"no purple phase expected before the training ends{end} ({since})"
        low, point = (f"{unit}{math.ceil(v - 1e-9)}" for v in (self.low, self.onset))
        high = f"{unit}{math.ceil(self.high - 1e-9)}" if self.high is not None else None
        span = (low if low == high else f"{low}-{high}") if high else f"{low} or later (perhaps never)"
        span += f", most likely {point}" if point not in (low, high) else ""
        return f"purple expected at {span} ({since}; log-ppl {self.factor:g}x its minimum)"


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 2)


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile of sorted ``values``, linearly interpolated (numpy's default)."""
    at = (len(values) - 1) * q / 100
    lo, hi = math.floor(at), math.ceil(at)
    return values[lo] + (values[hi] - values[lo]) * (at - lo)


def _crossings(xs: list[float], ys: list[float], target: float) -> tuple[float, float, float] | None:
    """Theil-Sen fit of ys on xs: where it reaches ``target`` at the median slope and at the
    slope percentiles (the latest x first when the slope is small); None without a rise."""
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
                    if xs[j] > xs[i])
    if not slopes:
        return None
    mid = statistics.median(slopes)
    if mid <= 0:
        return None
    intercept = statistics.median(y - mid * x for x, y in zip(xs, ys))
    anchor_x = xs[-1]
    anchor_y = max(mid * anchor_x + intercept, ys[-1])  # never behind the latest point

    def at(slope: float) -> float:
        return anchor_x + max(target - anchor_y, 0.0) / slope if slope > 0 else math.inf

    return at(mid), at(_percentile(slopes, HIGH_Q)), at(_percentile(slopes, LOW_Q))


def forecast_onset(names: Sequence[str], xs: Sequence[float], log_ratios: Sequence[float], factor: float,
                   min_index: int, purple: bool, schedule: Schedule | None = None) -> Forecast | None:
    """The onset forecast for a trajectory (names, epochs, log-ppl ratios to the minimum, in
    order), ``min_index`` the minimum's position, ``schedule`` the training's progress where
    known; None where none is made (see module doc)."""
    if purple or min_index < 0 or len(names) - min_index - 1 < MIN_POINTS:
        return None
    if schedule is not None and schedule.now + 1e-9 < xs[-1]:
        schedule = None  # logs that stop before the checkpoints: measure in epochs
    x = [float(schedule.at(v) if schedule else v) for v in xs[min_index:]]
    r = [float(v) for v in log_ratios[min_index:]]
    basis = tuple(names[min_index:])
    rising = [(xi, ri) for xi, ri in zip(x[1:], r[1:]) if ri > 1.0 + EXP_FLOOR]
    exp = None
    if len(rising) >= 2:  # the excess above the minimum, on a log scale
        exp = _crossings([xi for xi, _ in rising], [math.log(ri - 1.0) for _, ri in rising], math.log(factor - 1.0))
    half = max(len(x) // 2, 2)  # the latest half of the rise: its current pace
    lin = _crossings(x[-half - 1:], r[-half - 1:], factor)
    end = schedule.end if schedule else None
    if exp is None and lin is None:
        return Forecast(None, None, None, basis, factor, end=end)
    fits = [f for f in (exp, lin) if f is not None]
    to_epoch = schedule.epoch_of if schedule else (lambda v: v)
    onset = to_epoch(fits[0][0])  # the exponential's, else the linear's
    low = to_epoch(min(f[1] for f in fits))
    high = to_epoch(max(f[2] for f in fits))
    return Forecast(onset, low, high if math.isfinite(high) else None, basis, factor, end=end)
