"""Check the demo's promises on several seeds and thread counts (core/demo_check.py).

Trains the exact preset of ``overmem demo`` once per (seed, thread count), evaluating
each checkpoint in process (the numbers the demo gets), carries out the suggested
merge and evaluates it, then prints one table row per run: yellow checkpoints, the
purple window, overfit checkpoints, val log-ppl at the last purple checkpoint, test
accuracy inside the window against the best, the raw test ppl rise, and the merge.
The thread count may change the order of float sums; ``--cpu-capability default``
makes torch use its plain (unvectorized) CPU kernels instead of AVX2/AVX-512 ones,
which changes them for certain: both stand in for another CPU.
Exits 1 when any run misses a promise. About 4-10 minutes per run on one core.

    .venv/bin/python scripts/demo_seeds.py --seeds 0 1 2 3 4 --threads 1 2 --jobs 2
    .venv/bin/python scripts/demo_seeds.py --seeds 0 1 --threads 1 --cpu-capability default --jobs 2
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path


def one_run(seed: int, threads: int, root: str, lr: float | None, loss: str) -> tuple:
    import torch

    from overmem.demo import DemoProgress, DemoSettings, merge_and_evaluate, train_config
    from overmem.demo_check import demo_figures
    from overmem.evaluation.inprocess import EvaluateAfterCheckpoint
    from overmem.rundir import load_run
    from overmem.summary import summarize
    from overmem.training.trainer import train

    torch.set_num_threads(threads)
    settings = DemoSettings(out=Path(root) / f"seed{seed}-t{threads}", seed=seed, loss=loss)
    settings = replace(settings, lr=lr or settings.lr)
    cfg = replace(train_config(settings, settings.out, settings.lr),
                  eval={"max_new_tokens": settings.max_new_tokens, "batch_size": 50})
    train(cfg, after_checkpoint=EvaluateAfterCheckpoint())
    merge = merge_and_evaluate(settings, settings.out, DemoProgress())
    summary = summarize(load_run(settings.out))
    return seed, threads, demo_figures(summary), merge, summary.advice.phases.onset


def row(seed, threads, f, merge, onset) -> str:
    window = f"{f.window[0]}-{f.window[-1]} ({len(f.window)})" if f.window else "none"
    acc = f"{f.window_test_acc[0] * 100:.0f}-{f.window_test_acc[1] * 100:.0f}" if f.window_test_acc else "-"
    merged = (f"{f.merge_test[0]:.3f}/{f.merge_test[1] * 100:.0f} vs {f.latest_test[0]:.3f}/{f.latest_test[1] * 100:.0f}"
              if f.merge_test and f.latest_test else "none")
    return (f"| {seed} | {threads} | {f.yellow} | {window} | {f.overfit} ({f.overfit_before} before) | "
            f"{(f.last_purple_ratio or 0):.2f} | {acc} (best {(f.best_test_acc or 0) * 100:.1f}) | "
            f"{(f.test_ppl_rise or 0):.2f}x | {merge or 'none'}: {merged} | {'ok' if not f.failures() else '; '.join(f.failures())} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--lr", type=float, help="another learning rate than the preset's")
    parser.add_argument("--loss", default="sft")
    parser.add_argument("--keep", type=Path, help="keep the runs under this folder")
    parser.add_argument("--cpu-capability", choices=["default", "avx2", "avx512"],
                        help="torch's CPU kernels for every run (ATEN_CPU_CAPABILITY; default: the CPU's best)")
    args = parser.parse_args()
    if args.cpu_capability:  # read by torch when the spawned workers import it
        os.environ["ATEN_CPU_CAPABILITY"] = args.cpu_capability
    runs = list(itertools.product(args.seeds, args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        root = str(args.keep or tmp)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            results = list(pool.map(one_run, *zip(*runs), *zip(*[(root, args.lr, args.loss)] * len(runs))))
    print("| seed | threads | yellow | purple window | overfit | val log-ppl ratio at last purple | "
          "test acc % in window | test ppl rise | merge test ppl/acc vs latest | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for result in results:
        print(row(*result))
        failed += bool(result[2].failures())
    print(f"{len(results) - failed} of {len(results)} runs keep every promise")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
