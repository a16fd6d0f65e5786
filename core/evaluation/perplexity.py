"""Teacher-forced NLL of reference responses (prompt masked), batched by length.

Per sample we keep the summed NLL and the token count; every aggregate is
computed from those, so any of them can be recomputed later from the sidecar.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from core.data.encoding import Encoded, collate


@dataclass(frozen=True)
class SampleNLL:
    idx: int
    nll_sum: float
    n_tokens: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / self.n_tokens) if self.n_tokens else math.nan


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first) so padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def score(model, encoded: list[Encoded], pad_id: int, batch_size: int = 16, device: str = "cpu",
          pad_multiple: int = 16, progress=None) -> list[SampleNLL]:
    """Summed response NLL and token count of every example, in input order."""
    import torch

    from core.training.losses import token_nll

    out: list[SampleNLL | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    cuda = device.startswith("cuda")
    try:
        with torch.inference_mode():
            for batch in length_batches([len(e.input_ids) for e in encoded], batch_size):
                ids, mask, labels = collate([encoded[i] for i in batch], pad_id, pad_multiple)
                ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
                amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
                with amp:
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                nll, valid = token_nll(logits, labels)
                sums = (nll * valid).sum(dim=1).double().cpu().tolist()
                counts = valid.sum(dim=1).cpu().tolist()
                for row, i in enumerate(batch):
                    out[i] = SampleNLL(i, sums[row], int(counts[row]))
                if progress:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return [s for s in out if s is not None]


def aggregates(samples: list[SampleNLL]) -> dict[str, float]:
    """mean: mean of per-sample ppl (the paper's); token: exp(total NLL / total tokens); median."""
    scored = [s for s in samples if s.n_tokens]
    if not scored:
        return {}
    ppls = [s.ppl for s in scored]
    total_tokens = sum(s.n_tokens for s in scored)
    token = sum(s.nll_sum for s in scored) / total_tokens
    return {
        "mean": sum(ppls) / len(ppls),
        "token": math.exp(token) if token < 700 else math.inf,
        "median": statistics.median(ppls),
    }
