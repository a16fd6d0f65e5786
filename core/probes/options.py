"""What one probe run is asked to do: the options of ``overmem probe``, checked before any work.

The command's defaults are these fields' defaults (declared here once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overmem.params import require
from overmem.probes.registry import PROBES


@dataclass(frozen=True)
class ProbeOptions:
    probes: tuple[str, ...] = tuple(PROBES)
    n_samples: int = 5
    temperature: float = 1.0
    ood: dict = field(default_factory=dict)  # name -> path or preset
    reward_model: str | None = None
    backend: str = "auto"
    limit: int | None = 100
    mia_size: int = 500
    ece_bins: int = 10
    min_k: float = 0.2
    max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0
    bootstrap: int = 200  # resamples for the 95% intervals
    trust_remote_code: bool = False  # this invocation allows a model folder's own code (never the run's record)

    def validate(self) -> "ProbeOptions":
        """UsageError for the first option out of range, before any model loads."""
        for option, value, high in (("--n-samples", self.n_samples, 1000), ("--limit", self.limit, None),
                                    ("--mia-size", self.mia_size, None), ("--bins", self.ece_bins, 1000),
                                    ("--max-new-tokens", self.max_new_tokens, None),
                                    ("--batch-size", self.batch_size, None), ("bootstrap", self.bootstrap, None)):
            require(option, value, int, low=1, high=high)
        require("--temperature", self.temperature, float, low=0, low_open=True, high=100)
        require("--min-k", self.min_k, float, low=0, low_open=True, high=1)
        return self
