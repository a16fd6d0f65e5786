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
    """Per query: is the sample the reward model scores highest correct?

    The reward model runs on the evaluated model's device and reads each (query, sample)
    pair as its tokenizer's chat template renders a user and an assistant turn: a reward
    model is trained on conversations so rendered. A tokenizer without a template gets
    ``query + " " + sample``."""
    import torch

    rm, rm_tok = load_reward_model(ctx.options.reward_model, ctx.device)
    hits = []
    with torch.inference_mode():
        for row, s in zip(ctx.rows, side):
            texts, special = reward_texts(rm_tok, row["query"], s["generations"])
            batch = rm_tok(texts, return_tensors="pt", padding=True, add_special_tokens=special).to(ctx.device)
            scores = rm(**batch).logits[:, 0].float().tolist()
            hits.append(bool(s["correct"][int(np.argmax(scores))]))
    return hits


def load_reward_model(path: str, device: str):
    """The sequence-classification reward model (in eval mode, on ``device``) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm_tok = AutoTokenizer.from_pretrained(path)
    rm = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
    return rm, rm_tok


def reward_texts(rm_tok, query, generations: list[str]) -> tuple[list[str], bool]:
    """The texts the reward model scores, one per generation, and whether the tokenizer should
    add its special tokens (not to a chat rendering, which holds them already).

    ``query`` is a text (the user turn) or chat turns as the run's data holds them (the
    conversation so far); each generation is the assistant turn that follows it."""
    turns = [{"role": "user", "content": query}] if isinstance(query, str) else [dict(t) for t in query]
    if getattr(rm_tok, "chat_template", None):
        return [rm_tok.apply_chat_template(turns + [{"role": "assistant", "content": g}], tokenize=False)
                for g in generations], False
    text = query if isinstance(query, str) else " ".join(t["content"] for t in query)
    return [text + " " + g for g in generations], True
