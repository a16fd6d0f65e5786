"""Diversity of N samples per query at temperature 1: Pass@k, majority vote, EAD,
distinct n-grams, semantic diversity, Best-of-N with a reward model."""

from __future__ import annotations

import numpy as np

from overmem.probes import metrics as pm
from overmem.probes.base import Measurement, Probe


class Diversity(Probe):
    name = "diversity"
    help = "Pass@k, maj@N, EAD, distinct-n and semantic diversity of N samples per query"
    better = {"pass@": "higher", "maj@": "higher", "ead": "higher", "distinct": "higher", "semantic": "higher",
              "best_of_": "higher"}

    def measure(self, ctx, ckpt, model) -> Measurement:
        n = ctx.options.n_samples
        samples = ctx.sample(ckpt, model, ctx.prompts(ctx.rows), n)
        per_query, side = [], []
        for row, outs in zip(ctx.rows, samples):
            texts = [ctx.text(ids) for ids, _ in outs]
            answers = [ctx.extract(t) for t in texts]
            correct = [ctx.correct(t, row) for t in texts]
            c = sum(correct)
            values = {f"pass@{k}": pm.pass_at_k(n, c, k) for k in range(1, n + 1)}
            values[f"maj@{n}"] = float(pm.majority_vote(answers, lambda a, r=row: ctx.correct_answer(a, r)))
            values["ead"] = float(np.mean([pm.ead(texts, k, ctx.vocab_size) for k in range(1, 6)]))
            values.update({f"distinct{k}": pm.distinct_n(texts, k) for k in range(1, 6)})
            emb = ctx.embed(texts)
            if emb is not None:
                values["semantic_diversity"] = pm.semantic_diversity(emb)
            per_query.append(values)
            side.append({"generations": texts, "answers": answers, "correct": correct})
        if ctx.options.reward_model:
            for values, hit in zip(per_query, best_of_n(ctx, side)):
                values[f"best_of_{n}"] = float(hit)

        def metrics(idx):
            keys = per_query[0].keys() if per_query else ()
            return {k: float(np.mean([per_query[i][k] for i in idx if k in per_query[i]])) for k in keys}

        return Measurement(len(ctx.rows), metrics, side, len(ctx.rows))


def best_of_n(ctx, side) -> list[bool]:
    """Per query: is the sample the reward model scores highest correct?"""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm_tok = AutoTokenizer.from_pretrained(ctx.options.reward_model)
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.options.reward_model).eval()
    hits = []
    with torch.inference_mode():
        for row, s in zip(ctx.rows, side):
            query = row["query"] if isinstance(row["query"], str) else " ".join(t["content"] for t in row["query"])
            batch = rm_tok([query + " " + g for g in s["generations"]], return_tensors="pt", padding=True)
            scores = rm(**batch).logits[:, 0].tolist()
            hits.append(bool(s["correct"][int(np.argmax(scores))]))
    return hits
