"""Calibration: confidence of a sampled answer (mean token probability of the sequence)
against its correctness; expected calibration error over equal-width bins."""

from __future__ import annotations

import numpy as np

from overmem.params import Param
from overmem.probes import metrics as pm
from overmem.probes.base import Measurement, Probe


class Calibration(Probe):
    name = "calibration"
    help = "expected calibration error of sampled answers (confidence = mean token probability)"
    better = {"ece": "lower", "sample_accuracy": "higher"}
    params = (Param("bins", 10, "equal-width confidence bins of the ECE", 1, 1000),)

    def measure(self, ctx, ckpt, model) -> Measurement:
        bins = int(ctx.extra.get("bins", self.params[0].default))
        samples = ctx.sample(ckpt, model, ctx.prompts(ctx.rows), ctx.options.n_samples)
        per_query = []
        for row, outs in zip(ctx.rows, samples):
            per_query.append([(float(np.mean(np.exp(lps))) if lps else 0.0, ctx.correct(ctx.text(ids), row))
                              for ids, lps in outs])

        def metrics(idx):
            pairs = [p for i in idx for p in per_query[i]]
            conf, ok = [c for c, _ in pairs], [k for _, k in pairs]
            ece, _ = pm.expected_calibration_error(conf, ok, bins)
            return {"ece": ece, "mean_confidence": float(np.mean(conf)), "sample_accuracy": float(np.mean(ok))}

        pairs = [p for q in per_query for p in q]
        _, reliability = pm.expected_calibration_error([c for c, _ in pairs], [k for _, k in pairs], bins)
        side = [{"bins": reliability, "confidence": [c for c, _ in pairs], "correct": [k for _, k in pairs]}]
        return Measurement(len(ctx.rows), metrics, side, len(pairs))
