"""Teacher-forced NLL of reference responses (prompt masked), batched by length.

Per sample we keep the summed NLL and the token count; every aggregate is
computed from those, so any of them can be recomputed later from the sidecar.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from overmem.data.encoding import Encoded, collate


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


def _split_head(model):
    """(decoder, lm_head) of a causal LM (also under PEFT), or None when it has no such split."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None or getattr(base.config, "final_logit_softcapping", None):
        return None
    return decoder, head


def full_nll(model, ids, mask, labels):
    """Per-row summed NLL and token count of the labelled tokens from the model's own logits."""
    from overmem.training.losses import token_nll

    nll, valid = token_nll(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, labels)
    return (nll * valid).sum(dim=1), valid.sum(dim=1)


def head_nll(model, ids, mask, labels):
    """The same from the decoder's hidden states with the LM head run only on positions that
    predict a response token (most of the cost with long prompts and large vocabularies).
    Equal to ``full_nll`` only when the model's forward applies nothing after its head
    (Granite divides its logits, Cohere and FalconH1 scale them): ``score`` checks that."""
    import torch
    import torch.nn.functional as F

    from overmem.data.encoding import IGNORE

    decoder, head = _split_head(model)
    targets = labels[:, 1:]
    keep = targets != IGNORE
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
    rows = keep.nonzero(as_tuple=True)[0]
    logits = head(hidden[keep]).float()
    nll = F.cross_entropy(logits, targets[keep], reduction="none")
    sums = torch.zeros(ids.shape[0], dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)
    return sums, keep.sum(dim=1)


def agree(fast, full, counts, low_precision: bool) -> bool:
    """True when two per-row NLL sums are equal to float rounding (per token)."""
    import torch

    rtol = 2e-3 if low_precision else 1e-5
    denom = counts.clamp(min=1).double()
    return bool(torch.allclose(fast.double() / denom, full.double() / denom, rtol=rtol, atol=rtol))


def score(model, encoded: list[Encoded], pad_id: int, batch_size: int = 16, device: str = "cpu",
          pad_multiple: int = 16, progress=None, on_note=None) -> list[SampleNLL]:
    """Summed response NLL and token count of every example, in input order.

    The first batch is scored both ways; the fast path (``head_nll``) is used for the
    rest only when it matches the model's own logits there, else every batch runs the
    full forward and ``on_note`` hears why.
    """
    import torch

    out: list[SampleNLL | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    cuda = device.startswith("cuda")
    nll_fn = None
    try:
        with torch.inference_mode():
            for batch in length_batches([len(e.input_ids) for e in encoded], batch_size):
                ids, mask, labels = collate([encoded[i] for i in batch], pad_id, pad_multiple)
                ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
                amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
                with amp:
                    if nll_fn is None:  # first batch: both ways, then the verified one
                        sums, counts = full_nll(model, ids, mask, labels)
                        nll_fn = full_nll
                        if _split_head(model) is not None:
                            fast, _ = head_nll(model, ids, mask, labels)
                            low = cuda or next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
                            if agree(fast, sums, counts, low):
                                nll_fn = head_nll
                            elif on_note:
                                on_note(f"{type(_base(model)).__name__} changes its logits after the LM head: "
                                        "perplexity uses the full forward (slower, exact)")
                    else:
                        sums, counts = nll_fn(model, ids, mask, labels)
                sums, counts = sums.double().cpu().tolist(), counts.cpu().tolist()
                for row, i in enumerate(batch):
                    out[i] = SampleNLL(i, sums[row], int(counts[row]))
                if progress:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return [s for s in out if s is not None]


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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
