"""The compare view of probe results: one column per checkpoint, one row per probe metric.

A checkpoint is shown as better only when its 95% bootstrap interval does not
overlap any other checkpoint's: two numbers within each other's noise are not ranked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overmem.probes.registry import PROBES
from overmem.rundir.lines import CI_HIGH, CI_LOW
from overmem.rundir.records import Run


def better(probe: str, metric: str) -> str | None:
    """'higher', 'lower' or None, as the probe that defines ``metric`` declares it."""
    return PROBES[probe].direction(metric) if probe in PROBES else None


@dataclass(frozen=True)
class ProbeRow:
    probe: str
    metric: str
    values: dict  # checkpoint -> value (latest)
    better: str | None
    intervals: dict = field(default_factory=dict)  # checkpoint -> (low, high), when recorded

    def best(self) -> str | None:
        """The better checkpoint, when its interval clears every other's (else None)."""
        present = {k: v for k, v in self.values.items() if v is not None and v == v}
        if self.better is None or len(present) < 2:
            return None
        pick = max if self.better == "higher" else min
        top = pick(present, key=present.get)
        if any(present[k] == present[top] for k in present if k != top):
            return None
        low, high = self.intervals.get(top, (present[top], present[top]))
        for name in present:
            if name == top:
                continue
            other_low, other_high = self.intervals.get(name, (present[name], present[name]))
            if self.better == "higher" and low <= other_high or self.better == "lower" and high >= other_low:
                return None
        return top


def probe_rows(run: Run, names: list[str]) -> list[ProbeRow]:
    latest: dict[tuple, float] = {}
    for m in run.metrics:
        if m.probe and m.checkpoint in names:
            latest[(m.probe, m.metric, m.checkpoint, m.aggregate)] = m.value
    keys = sorted({(p, metric) for p, metric, _, _ in latest}, key=lambda k: (k[0], k[1]))
    rows = []
    for p, metric in keys:
        values = {n: latest.get((p, metric, n, "")) for n in names}
        intervals = {n: (latest[(p, metric, n, CI_LOW)], latest[(p, metric, n, CI_HIGH)]) for n in names
                     if (p, metric, n, CI_LOW) in latest and (p, metric, n, CI_HIGH) in latest}
        rows.append(ProbeRow(p, metric, values, better(p, metric), intervals))
    return rows


def probe_json(run: Run, names: list[str]) -> dict:
    """checkpoint -> probe -> metric -> value (the intervals are in ``probe_intervals``)."""
    out: dict = {n: {} for n in names}
    for row in probe_rows(run, names):
        for name, value in row.values.items():
            if value is not None:
                out[name].setdefault(row.probe, {})[row.metric] = value
    return out


def probe_intervals(run: Run, names: list[str]) -> dict:
    """checkpoint -> probe -> metric -> [low, high] of the 95% bootstrap interval."""
    out: dict = {n: {} for n in names}
    for row in probe_rows(run, names):
        for name, interval in row.intervals.items():
            out[name].setdefault(row.probe, {})[row.metric] = list(interval)
    return out
