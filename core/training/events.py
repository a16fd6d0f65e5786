"""What a training run tells its front ends (rank 0 only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a training run, for front ends (rank 0 only)."""

    kind: str  # start | step | checkpoint | note | end
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    text: str = ""
