"""The probes overmem can run, by name (the CLI's --probes choices and help come from here)."""

from __future__ import annotations

from overmem.errors import UsageError
from overmem.probes.base import Probe
from overmem.probes.calibration import Calibration
from overmem.probes.diversity import Diversity
from overmem.probes.mia import Mia
from overmem.probes.ood import Ood
from overmem.probes.robustness import Robustness

PROBES: dict[str, Probe] = {p.name: p for p in (Robustness(), Diversity(), Calibration(), Mia(), Ood())}


def get_probes(names) -> list[Probe]:
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise UsageError(f"unknown probe(s) {', '.join(unknown)} (probes: {', '.join(PROBES)})")
    return [PROBES[n] for n in names]
