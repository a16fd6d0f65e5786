"""The compare view of probe results: one column per checkpoint, one row per probe metric."""

from __future__ import annotations

from dataclasses import dataclass

from overmem.rundir.records import Run

_HIGHER = ("acc_", "pass@", "maj@", "ead", "distinct", "semantic", "best_of", "sample_accuracy")
_LOWER = ("drop", "ece", "auroc", "tpr@")


def better(metric: str) -> str | None:
    """'higher', 'lower' or None (no better side, e.g. mean confidence)."""
    if metric.startswith(_LOWER):
        return "lower"
    if metric.startswith(_HIGHER):
        return "higher"
    return None


@dataclass(frozen=True)
class ProbeRow:
    probe: str
    metric: str
    values: dict  # checkpoint -> value (latest)
    better: str | None

    def best(self) -> str | None:
        present = {k: v for k, v in self.values.items() if v is not None and v == v}
        if self.better is None or len(present) < 2:
            return None
        pick = max if self.better == "higher" else min
        return pick(present, key=present.get)


def probe_rows(run: Run, names: list[str]) -> list[ProbeRow]:
    latest: dict[tuple, float] = {}
    for m in run.metrics:
        if m.probe and m.checkpoint in names:
            latest[(m.probe, m.metric, m.checkpoint)] = m.value
    keys = sorted({(p, metric) for p, metric, _ in latest}, key=lambda k: (k[0], k[1]))
    return [ProbeRow(p, metric, {n: latest.get((p, metric, n)) for n in names}, better(metric)) for p, metric in keys]


def probe_json(run: Run, names: list[str]) -> dict:
    out: dict = {n: {} for n in names}
    for row in probe_rows(run, names):
        for name, value in row.values.items():
            if value is not None:
                out[name].setdefault(row.probe, {})[row.metric] = value
    return out
