"""Membership inference: training members against unseen samples of the same
distribution, four scores (Loss, Zlib, Min-K%, Min-K%++), AUROC and TPR at 5% FPR."""

from __future__ import annotations

from dataclasses import replace

from overmem.data.loaders import SplitSpec, select
from overmem.errors import UsageError
from overmem.params import Param
from overmem.probes import metrics as pm
from overmem.probes.base import Measurement, Probe

SCORES = ("loss", "zlib", "mink", "minkpp")


def token_scores(logits, targets):
    """Per-token log p(y_t) and Min-K%++'s (log p(y_t) - mu_t) / sigma_t, where mu_t and
    sigma_t^2 are the mean and variance of log p(z) under p(z) over the vocabulary.
    ``logits`` (batch, T, V) predict ``targets`` (batch, T); -100 marks ignored tokens."""
    logp = logits.float().log_softmax(-1)
    valid = targets != -100
    tok_lp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp**2).sum(-1) - mu**2).clamp(min=1e-12).sqrt()
    return tok_lp, (tok_lp - mu) / sigma, valid


def member_rows(info, size: int) -> tuple[list[dict], list[dict]]:
    """Training rows (members) and validation rows (non-members), as many of each."""
    splits = info.data.get("splits") or {}
    if "fit" not in info.data or "val" not in splits:
        raise UsageError("the mia probe needs the run's training data and a val split (an overmem run)")
    fit, val = SplitSpec.from_json(info.data["fit"]), SplitSpec.from_json(splits["val"])
    members = select(replace(fit, count=min(size, fit.count or size), sample=None))
    heldout = select(replace(val, count=size, sample=None))
    k = min(len(members), len(heldout))
    return members[:k], heldout[:k]


class Mia(Probe):
    name = "mia"
    help = "membership inference AUROC and TPR@5%FPR of Loss, Zlib, Min-K% and Min-K%++"
    better = {"auroc_": "lower", "tpr@": "lower"}  # how well membership leaks: lower is better
    split = "mia"
    params = (Param("k", 0.2, "fraction of lowest token scores for Min-K% and Min-K%++", 1e-6, 1.0),)

    def measure(self, ctx, ckpt, model) -> Measurement:
        import torch

        from overmem.data.encoding import collate

        k = float(ctx.extra.get("k", ctx.options.min_k))
        members, heldout = member_rows(ctx.info, ctx.options.mia_size)
        units: list[tuple[int, dict]] = []  # (group, {score: value}); group 0 members, 1 non-members
        model.eval()
        batch = ctx.options.batch_size
        for group, rows in enumerate((members, heldout)):
            for start in range(0, len(rows), batch):
                chunk = rows[start:start + batch]
                ids, mask, labels = collate([ctx.encode(r) for r in chunk], ctx.tokenizer.pad_token_id, 16)
                with torch.inference_mode():
                    logits = model(input_ids=ids.to(ctx.device), attention_mask=mask.to(ctx.device)).logits
                tok_lp, plus, valid = token_scores(logits.float()[:, :-1], labels[:, 1:].to(logits.device))
                for b, row in enumerate(chunk):
                    v = valid[b]
                    lps = tok_lp[b][v].cpu().numpy()
                    nll = float(-lps.mean())
                    # higher score = more likely a member
                    units.append((group, {"loss": -nll, "zlib": -pm.zlib_score(nll, row["response"]),
                                          "mink": pm.min_k(lps, k), "minkpp": pm.min_k(plus[b][v].cpu().numpy(), k)}))

        def metrics(idx):
            out = {}
            for score in SCORES:
                pos = [units[i][1][score] for i in idx if units[i][0] == 0]
                neg = [units[i][1][score] for i in idx if units[i][0] == 1]
                out[f"auroc_{score}"] = pm.auroc(pos, neg)
                out[f"tpr@5%fpr_{score}"] = pm.tpr_at_fpr(pos, neg, 0.05)
            return out

        side = [{"score": s, "members": [u[1][s] for u in units if u[0] == 0],
                 "heldout": [u[1][s] for u in units if u[0] == 1]} for s in SCORES]
        return Measurement(len(units), metrics, side, len(units), strata=tuple(g for g, _ in units))
