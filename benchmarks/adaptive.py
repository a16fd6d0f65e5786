"""Adaptive evaluation (``overmem eval --adaptive``) against full evaluation.

``--simulate``: simulated pairs of checkpoints with known accuracies, graded on the same
rows (a per-row difficulty shared by both, so they agree on most rows as real
checkpoints do): the best one graded on every row, the other equal to it or 1 to 10
points below. For each case, how often the fixed-n paired test at z calls the other
"clearly below", how often the adaptive rule does (its looks of overmem.adaptive.schedule,
each at its share of the error of overmem.sequential, stopping when clearly below or
shown within the margin), and the adaptive rule's mean rows. Both use overmem.phases'
own functions on the same draws. A wrong call is a "clearly below" on equal accuracies.

Real runs (default): the demo preset (full finetuning of the tiny model, 30 epochs)
with ``--eval-size`` rows per split on ``--seeds`` at lr 3e-4, and seed 0 at lr 1.5e-4
(accuracy moves slowly); each trained once without evaluation, then evaluated in full
and adaptively in fresh copies (hf backend, in process): generated tokens, wall time,
phases identical, recommendation and merge suggestion identical.

    .venv/bin/python benchmarks/adaptive.py --simulate [--reps 2000]
    .venv/bin/python benchmarks/adaptive.py [--seeds 0 1 2 3 4] [--eval-size 400] [--splits val] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- simulation --------------------------------------------------------------------
def draw(rng: random.Random, n: int, best: float, other: float, agree: float) -> tuple[str, str]:
    """Grades of two checkpoints on ``n`` rows: the other reuses the best's row difficulty with
    probability ``agree`` (else a fresh one), so its accuracy is ``other`` and most rows agree."""
    a, b = [], []
    for _ in range(n):
        u = rng.random()
        v = u if rng.random() < agree else rng.random()
        a.append("1" if u < best else "0")
        b.append("1" if v < other else "0")
    return "".join(a), "".join(b)


def verdicts(best_grades: str, grades: str, t) -> tuple[bool, bool, int]:
    """(fixed-n calls it clearly below, adaptive calls it clearly below, adaptive's rows)."""
    from overmem.adaptive import row_order, schedule
    from overmem.phases import Point, gap_to_best, point_is_high

    n = len(grades)
    best = Point("best", 1.0, best_grades.count("1") / n, n, grades=best_grades)
    full = Point("p", 1.0, grades.count("1") / n, n, grades=grades)
    fixed_below = not point_is_high(full, best, t)
    order = row_order(range(n))
    looks = schedule(n)
    for k, look in enumerate(looks, 1):
        seen = set(order[:look])
        g = "".join(c if i in seen else "." for i, c in enumerate(grades))
        right = g.count("1")
        p = Point("p", 1.0, right / look, look, grades=g, looks=k)
        if look == n:
            return fixed_below, not point_is_high(p, best, t), n
        gap = gap_to_best(p, best, t)
        if gap.below():
            return fixed_below, True, look
        if gap.within(t):
            return fixed_below, False, look
    raise AssertionError("the schedule ends at the cap")


def simulate(reps: int, seed: int) -> int:
    from overmem.phases import Thresholds
    from overmem.sequential import final_z, interim_z

    t = Thresholds()
    print(f"z {t.z:g}, margin {t.acc_margin:.0%}; looks before the last at z {interim_z(t.z):.2f}, the last at "
          f"z {final_z(t.z, 2):.2f} to {final_z(t.z, 7):.2f}; {reps} pairs per case")
    print(f"{'rows':>5} {'best':>5} {'gap':>4} | {'fixed: below':>12} {'adaptive: below':>15} | {'mean rows':>9}")
    worse = []
    for n in (400, 1319):
        for acc in (0.5, 0.8, 0.97):
            for gap_points in (0, 1, 2, 5, 10):
                rng = random.Random(f"{seed}-{n}-{acc}-{gap_points}")
                other = acc - gap_points / 100
                fixed = adaptive = rows = 0
                for _ in range(reps):
                    best, grades = draw(rng, n, acc, other, agree=0.9)
                    f, a, used = verdicts(best, grades, t)
                    fixed += f
                    adaptive += a
                    rows += used
                print(f"{n:>5} {acc:>5.0%} {gap_points:>4} | {fixed / reps:>12.1%} {adaptive / reps:>15.1%} | "
                      f"{rows / reps:>9.0f}")
                if gap_points == 0 and adaptive > fixed:
                    worse.append((n, acc))
    print("wrong 'clearly below' calls (gap 0): adaptive " + (
        "no higher than fixed-n in every case" if not worse else f"higher than fixed-n in {worse}"))
    return 1 if worse else 0


# -- real runs -----------------------------------------------------------------------
def train(out: Path, seed: int, lr: float, eval_size: int) -> None:
    from overmem.demo import DemoSettings, train_config

    if (out / "checkpoints").is_dir() and json.loads((out / "run.json").read_text()).get("status") == "finished":
        return
    shutil.rmtree(out, ignore_errors=True)
    cfg = train_config(DemoSettings(out=out, seed=seed, eval_size=eval_size), out, lr)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(cfg.to_json(), fh)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, "-m", "overmem.training", fh.name], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def evaluate(run: Path, adaptive: bool, splits: tuple[str, ...]) -> tuple[float, int]:
    from overmem.evaluation.options import EvalOptions
    from overmem.evaluation.runner import Evaluator

    options = EvalOptions(backend="hf", max_new_tokens=64, batch_size=50, splits=splits, adaptive=adaptive)
    start = time.perf_counter()
    ev = Evaluator(run, options)
    try:
        ev.evaluate_pending()
    finally:
        ev.close()
    return time.perf_counter() - start, ev.generated_tokens


def outcome(run: Path, splits: tuple[str, ...]) -> dict:
    from overmem.rundir import load_run
    from overmem.summary import summarize

    out = {}
    for split in splits:
        s = summarize(load_run(run), split)
        out[split] = {"phases": {v.name: v.phase.value for v in s.advice.phases.verdicts},
                      "recommended": s.advice.recommended, "merge": s.advice.merge,
                      "n": {r.name: r.get(split).n for r in s.rows}}
    return out


MARKER = ".overmem-adaptive-bench"  # a folder this benchmark made: the only kind it deletes in


def own_folder(base: Path) -> Path:
    """``base``, made by this benchmark (marked), or refused: --root may name any folder."""
    if base.exists() and not (base / MARKER).is_file():
        raise SystemExit(f"{base} exists and was not made by this benchmark; choose another --root")
    base.mkdir(parents=True, exist_ok=True)
    (base / MARKER).touch()
    return base


def one(name: str, seed: int, lr: float, eval_size: int, splits: tuple[str, ...], root: str) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    base = own_folder(Path(root) / name)
    train(base / "trained", seed, lr, eval_size)
    result = {"name": name}
    for mode in ("full", "adaptive"):
        run = base / mode
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base / "trained", run)
        result[mode + "_s"], result[mode + "_tokens"] = evaluate(run, mode == "adaptive", splits)
        result[mode] = outcome(run, splits)
    return result


def real(args) -> int:
    cases = [(f"seed{s}", s, 3e-4) for s in args.seeds] + [("lr1.5e-4", 0, 1.5e-4)]
    splits = tuple(args.splits.split(","))
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, *zip(*[(n, s, lr, args.eval_size, splits, args.root) for n, s, lr in cases])))
    print(f"demo preset, {args.eval_size} rows per split, splits {', '.join(splits)}, hf backend, batch 50, "
          "64 new tokens")
    print(f"{'run':>9} | {'tokens':>6} {'wall':>6} | {'phases same':>11} | {'rec':>4} {'merge':>5} | rows generated")
    ok = True
    for r in results:
        same = total = 0
        rec = merge = True
        rows = []
        for split in splits:
            full, ad = r["full"][split], r["adaptive"][split]
            same += sum(full["phases"][k] == ad["phases"].get(k) for k in full["phases"])
            total += len(full["phases"])
            rec &= full["recommended"] == ad["recommended"]
            merge &= full["merge"] == ad["merge"]
            rows.append(f"{split} {sum(v or 0 for v in ad['n'].values())}/{sum(v or 0 for v in full['n'].values())}")
            diff = [f"{k} {full['phases'][k]}->{ad['phases'].get(k)}" for k in full["phases"]
                    if full["phases"][k] != ad["phases"].get(k)]
            if diff:
                rows.append("(" + ", ".join(diff) + ")")
        ok &= rec and merge
        print(f"{r['name']:>9} | {r['adaptive_tokens'] / r['full_tokens']:>6.1%} {r['adaptive_s'] / r['full_s']:>6.1%} | "
              f"{same:>4}/{total:<6} | {'same' if rec else 'DIFF':>4} {'same' if merge else 'DIFF':>5} | "
              f"{' '.join(rows)}")
        print(f"{'':>9}   full: {r['full_tokens']} tokens in {r['full_s']:.0f} s; adaptive: {r['adaptive_tokens']} "
              f"tokens in {r['adaptive_s']:.0f} s; recommended {r['full'][splits[0]]['recommended']} / "
              f"{r['adaptive'][splits[0]]['recommended']}, merge {r['full'][splits[0]]['merge']} / "
              f"{r['adaptive'][splits[0]]['merge']}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulate", action="store_true")
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--eval-size", type=int, default=400)
    parser.add_argument("--splits", default="val")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "overmem-adaptive-bench"))
    args = parser.parse_args()
    return simulate(args.reps, args.seed) if args.simulate else real(args)


if __name__ == "__main__":
    sys.exit(main())
