"""Merge methods behind a registry; the CLI's --method choices come from here.

``linear`` is exact task arithmetic: theta_base + sum_i w_i delta_i, and the only
method that has an exact adapter form. ``ties`` (trim, elect sign, disjoint mean)
is offered for full outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from overmem.params import Param, check_params


@dataclass(frozen=True)
class MergeMethod:
    name: str
    help: str
    combine: Callable  # (deltas: list[tensor | None], weights: list[float], **params) -> tensor | None
    exact_adapter: bool = False
    params: tuple[Param, ...] = ()
    registry: ClassVar[dict[str, "MergeMethod"]] = {}

    def check_params(self, given: dict) -> dict:
        return check_params(self.params, given, f"--method {self.name}")


def register(method: MergeMethod) -> MergeMethod:
    MergeMethod.registry[method.name] = method
    return method


def linear(deltas, weights):
    out = None
    for delta, w in zip(deltas, weights):
        if delta is None or w == 0:
            continue
        out = delta * w if out is None else out.add_(delta, alpha=w)
    return out


def ties(deltas, weights, density: float = 0.2):
    """TIES-merging: keep each delta's top ``density`` magnitudes, elect a sign per
    entry by summed mass, average the agreeing entries (weighted)."""
    import torch

    present = [(d, w) for d, w in zip(deltas, weights) if d is not None and w != 0]
    if not present:
        return None
    trimmed = []
    for d, w in present:
        k = max(1, int(d.numel() * density))
        threshold = d.abs().flatten().kthvalue(d.numel() - k + 1).values
        trimmed.append((torch.where(d.abs() >= threshold, d, torch.zeros_like(d)) * w, w))
    stacked = torch.stack([t for t, _ in trimmed])
    sign = torch.sign(stacked.sum(0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    weight = torch.tensor([w for _, w in trimmed]).view(-1, *[1] * sign.dim())
    mass = (stacked * agree).sum(0)
    norm = (agree * weight.abs()).sum(0).clamp(min=1e-12)
    total = sum(abs(w) for _, w in trimmed)
    return mass / norm * total


register(MergeMethod("linear", "exact task arithmetic: theta_base + sum_i w_i delta_i", linear, exact_adapter=True))
register(MergeMethod("ties", "TIES: trim each delta to its top density fraction, elect signs, disjoint mean "
                     "(full output)", ties,
                     params=(Param("density", 0.2, "fraction of each delta's entries kept", 1e-6, 1.0),)))


def get_merge_method(name: str) -> MergeMethod:
    from overmem.errors import UsageError

    try:
        return MergeMethod.registry[name]
    except KeyError:
        raise UsageError(f"unknown merge method {name!r} (methods: {', '.join(MergeMethod.registry)})") from None
