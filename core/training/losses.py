"""Token losses on response tokens (registry: sft, mar).

Both return the SUM of per-token losses over response tokens; the loop divides
by the number of response tokens in the whole effective batch, so both are
normalised the same way and the result does not depend on how the batch is
split into micro-batches or processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from overmem.data.encoding import IGNORE


def token_nll(logits, labels):
    """Per-token NLL of labels[t+1] given logits[t]; 0 where masked. Returns (nll, mask)."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(targets.shape)
    return nll, targets != IGNORE


def sft_loss(logits, labels):
    nll, mask = token_nll(logits, labels)
    return (nll * mask).sum()


def mar_loss(logits, labels):
    """Memorization-aware reweighting: (1 - p(y_t)) * CE_t with p taken without gradient."""
    nll, mask = token_nll(logits, labels)
    weight = 1.0 - (-nll.detach()).exp()
    return (weight * nll * mask).sum()


@dataclass(frozen=True)
class Loss:
    name: str
    help: str
    fn: Callable
    registry: ClassVar[dict[str, "Loss"]] = {}


def register(loss: Loss) -> Loss:
    Loss.registry[loss.name] = loss
    return loss


register(Loss("sft", "cross-entropy on response tokens (prompt masked)", sft_loss))
register(Loss("mar", "memorization-aware reweighting: CE_t x (1 - p(y_t)), p without gradient", mar_loss))


def get_loss(name: str) -> Loss:
    from overmem.errors import UsageError

    try:
        return Loss.registry[name]
    except KeyError:
        raise UsageError(f"unknown loss {name!r} (losses: {', '.join(Loss.registry)})") from None
