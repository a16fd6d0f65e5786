"""Check that the demo preset shows black, yellow and purple on several seeds.

Trains the exact preset of ``overmem demo`` once per seed, evaluating each checkpoint
in process (the same numbers the demo gets), and prints one line per seed: how many
checkpoints fell in each phase, the onset, the recommendation and the suggested
merge. Exits 1 when a seed lacks one of the three phases. Use it after any change
to the preset, the generator or the tiny model. About 3.5 minutes per seed on one
core; --jobs 2 runs two seeds at once.

    .venv/bin/python scripts/demo_seeds.py 0 1 2 3 4 --jobs 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REQUIRED = ("black", "yellow", "purple")


def one_seed(seed: int, root: str) -> tuple[int, Counter, str]:
    import torch

    from overmem.demo import DemoSettings, train_config
    from overmem.evaluation.inprocess import evaluate_after_checkpoint
    from overmem.rundir import load_run
    from overmem.summary import summarize
    from overmem.training.trainer import train

    torch.set_num_threads(1)
    settings = DemoSettings(out=Path(root) / f"seed-{seed}", seed=seed)
    cfg = replace(train_config(settings, settings.out, settings.lr),
                  eval={"max_new_tokens": settings.max_new_tokens, "batch_size": 50})
    train(cfg, after_checkpoint=evaluate_after_checkpoint)
    advice = summarize(load_run(settings.out)).advice
    counts = Counter(v.phase.value for v in advice.phases.verdicts)
    purple = [v.name for v in advice.phases.verdicts if v.phase.value == "purple"]
    ratios = [v.log_ratio for v in advice.phases.verdicts if v.log_ratio is not None and v.phase.value != "black"]
    merge = "+".join(advice.merge) if advice.merge else "none"
    detail = (f"onset {advice.phases.onset}, purple {','.join(purple) or 'none'}, max log-ratio "
              f"{max(ratios, default=float('nan')):.2f} (after epoch 0), recommended {advice.recommended}, "
              f"merge {merge}")
    return seed, counts, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the runs under this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = str(args.keep or tmp)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            results = list(pool.map(one_seed, args.seeds, [root] * len(args.seeds)))
    failed = []
    for seed, counts, detail in results:
        phases = " ".join(f"{p} {counts.get(p, 0)}" for p in (*REQUIRED, "overfit"))
        print(f"seed {seed}: {phases} | {detail}")
        if not all(counts.get(p) for p in REQUIRED):
            failed.append(seed)
    if failed:
        print(f"seeds without all three phases: {', '.join(map(str, failed))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
