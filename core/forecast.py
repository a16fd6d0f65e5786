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

The point forecast is the exponential crossing; the interval runs from the
earliest to the latest crossing of either fit over the spread (the 10th to 90th
percentile) of its pairwise slopes, so few or noisy points give a wide interval.
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
_LOW_Q, _HIGH_Q = 10, 90  # slope percentiles that bound the interval


@dataclass(frozen=True)
class Forecast:
    onset: float | None  # the epoch (or step) where log-ppl is expected to cross the threshold; None: no rise
    low: float | None
    high: float | None  # None: no crossing within any continuation of the rise seen so far
    basis: tuple[str, ...]  # the checkpoints fitted: the minimum and every one after it
    factor: float
    method: str = METHOD

    def to_json(self) -> dict:
        return {"onset_epoch": _rounded(self.onset), "low": _rounded(self.low), "high": _rounded(self.high),
                "from": list(self.basis), "method": self.method}

    def describe(self, unit: str = "ep") -> str:
        """"purple expected at ep19-ep24 (from ep6-ep9)" or why none is expected yet."""
        since = f"from {self.basis[0]}-{self.basis[-1]}"
        if self.onset is None:
            return f"no purple phase expected: log-ppl is not rising ({since})"
        low = f"{unit}{math.ceil(self.low - 1e-9)}"
        high = f"{unit}{math.ceil(self.high - 1e-9)}" if self.high is not None else "never"
        span = low if low == high else f"{low}-{high}"
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

    return at(mid), at(_percentile(slopes, _HIGH_Q)), at(_percentile(slopes, _LOW_Q))


def forecast_onset(names: Sequence[str], xs: Sequence[float], log_ratios: Sequence[float], factor: float,
                   min_index: int, purple: bool) -> Forecast | None:
    """The onset forecast for a trajectory (names, x positions, log-ppl ratios to the minimum,
    in order), ``min_index`` the minimum's position; None where none is made (see module doc)."""
    if purple or min_index < 0 or len(names) - min_index - 1 < MIN_POINTS:
        return None
    x = [float(v) for v in xs[min_index:]]
    r = [float(v) for v in log_ratios[min_index:]]
    basis = tuple(names[min_index:])
    rising = [(xi, ri) for xi, ri in zip(x[1:], r[1:]) if ri > 1.0 + 1e-9]
    exp = None
    if len(rising) >= 2:  # the excess above the minimum, on a log scale
        exp = _crossings([xi for xi, _ in rising], [math.log(ri - 1.0) for _, ri in rising], math.log(factor - 1.0))
    half = max(len(x) // 2, 2)  # the latest half of the rise: its current pace
    lin = _crossings(x[-half - 1:], r[-half - 1:], factor)
    if exp is None and lin is None:
        return Forecast(None, None, None, basis, factor)
    fits = [f for f in (exp, lin) if f is not None]
    onset = (exp or lin)[0]
    low = min(f[1] for f in fits)
    high = max(f[2] for f in fits)
    return Forecast(onset, low, high if math.isfinite(high) else None, basis, factor)
