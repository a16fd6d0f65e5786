"""The learning-rate schedule and the example order: pure functions of the config and the step,
so a resumed run continues exactly where it stopped."""

from __future__ import annotations

import math


def effective_warmup(requested: int, total_steps: int) -> int:
    """Table 6's 100 warmup steps, clipped to 10% of all steps for small runs."""
    return min(requested, max(0, total_steps // 10))


def lr_factor(schedule: str, step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of an epoch: a pure function of (seed, epoch), so resume is exact."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()
