"""Out-of-distribution accuracy on other benchmarks of the same skill."""

from __future__ import annotations

import math

from overmem.data.loaders import SplitSpec, resolve_source, select
from overmem.probes.base import Measurement, Probe


class Ood(Probe):
    name = "ood"
    help = "greedy accuracy on other benchmarks (--ood NAME=PATH), each and on average"
    better = {"acc_": "higher"}
    split = "ood"

    def measure(self, ctx, ckpt, model) -> Measurement:
        hits: list[tuple[int, bool]] = []
        side, names = [], list(ctx.options.ood)
        for k, (name, ref) in enumerate(ctx.options.ood.items()):
            source = resolve_source(ref, synthetic_stream="ood", synthetic_path_seed="reference")
            count = (ctx.options.limit or 100) if source.kind == "synthetic" else None
            rows = select(SplitSpec(source, count=count))
            rows = rows[: ctx.options.limit] if ctx.options.limit else rows
            texts = ctx.greedy(ckpt, model, ctx.prompts(rows))
            ok = [ctx.correct(t, r) for t, r in zip(texts, rows)]
            hits += [(k, c) for c in ok]
            side += [{"set": name, "generation": t, "correct": c} for t, c in zip(texts, ok)]

        def metrics(idx):
            out = {}
            for k, name in enumerate(names):
                mine = [hits[i][1] for i in idx if hits[i][0] == k]
                out[f"acc_{name}"] = sum(mine) / len(mine) if mine else math.nan
            values = [v for v in out.values() if v == v]
            out["acc_avg"] = sum(values) / len(values) if values else math.nan
            return out

        return Measurement(len(hits), metrics, side, len(hits), strata=tuple(k for k, _ in hits))
