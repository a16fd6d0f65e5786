"""Prompt-perturbation robustness: accuracy with and without a neutral preamble."""

from __future__ import annotations

from overmem.probes.base import Measurement, Probe

PREAMBLES = (
    "First, let's tackle this step by step together.",
    "Today, we'll work through this problem together and find a clear solution.",
    "We understand the problem we're tackling and will work together to solve it.",
    "That's a great question! We understand the problem we're tackling and will work together to solve it.",
)


class Robustness(Probe):
    name = "robustness"
    help = "accuracy with each of four neutral preambles before the question, and the drops"
    better = {"acc_": "higher", "drop_": "lower"}

    def measure(self, ctx, ckpt, model) -> Measurement:
        variants = [("plain", "")] + [(f"preamble{i + 1}", p + " ") for i, p in enumerate(PREAMBLES)]
        hits, side = {}, []
        for label, prefix in variants:
            texts = ctx.greedy(ckpt, model, ctx.prompts(ctx.rows, prefix))
            hits[label] = [ctx.correct(t, r) for t, r in zip(texts, ctx.rows)]
            side += [{"variant": label, "idx": i, "generation": t, "correct": c}
                     for i, (t, c) in enumerate(zip(texts, hits[label]))]

        def metrics(idx):
            acc = {label: sum(hits[label][i] for i in idx) / len(idx) for label in hits}
            drops = [acc["plain"] - acc[f"preamble{i + 1}"] for i in range(len(PREAMBLES))]
            out = {f"acc_{k}": v for k, v in acc.items()}
            out.update({f"drop_preamble{i + 1}": d for i, d in enumerate(drops)})
            out["drop_avg"] = sum(drops) / len(drops)
            return out

        return Measurement(len(ctx.rows), metrics, side, len(ctx.rows))
