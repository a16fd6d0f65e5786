"""Backtest the onset forecast (overmem.forecast) on every prefix of real runs.

For each finished run: the actual onset (the first purple checkpoint of the whole run),
then the forecast made on the run cut 1, 2, 3 and 5 checkpoints after the driving
split's log-ppl minimum, and at the first checkpoint whose log-ppl ratio passes 1.15:
the absolute error in epochs (the forecast's epoch is the first checkpoint at or after
the expected crossing) and whether the interval holds the actual onset. For a run that
never turns purple, a forecast is right when it expects no crossing or one beyond the
run's last epoch. Make the runs first, for example:

    .venv/bin/python scripts/demo_seeds.py --seeds 0 1 2 3 4 --threads 1 --jobs 2 --keep runs/sft
    .venv/bin/python scripts/demo_seeds.py --seeds 0 --threads 1 --lr 6e-4 --keep runs/lr6
    .venv/bin/python scripts/demo_seeds.py --seeds 0 --threads 1 --lr 1.5e-4 --keep runs/lr1.5
    .venv/bin/python scripts/demo_seeds.py --seeds 0 --threads 1 --loss mar --keep runs/mar
    .venv/bin/python benchmarks/forecast.py runs/*/seed*
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

POINTS = ("+1", "+2", "+3", "+5", "r1.15")


def _prefix(run, names: set[str]):
    """The run as it was when its checkpoint ``names`` were all evaluated (training logs up to the
    last of them: the forecast sees nothing of the future)."""
    kept = tuple(c for c in run.checkpoints if c.name in names)
    step = max((c.step or 0) for c in kept)
    return replace(run, checkpoints=kept, metrics=tuple(m for m in run.metrics if m.checkpoint in names),
                   train_logs=tuple(t for t in run.train_logs if t.step <= step))


def _epoch(x: float | None) -> float:
    return math.inf if x is None or not math.isfinite(x) else math.ceil(x - 1e-9)


def backtest(path: Path) -> dict:
    from overmem.phases import log_ratio
    from overmem.rundir import load_run
    from overmem.summary import summarize
    from overmem.values import x_of

    run = load_run(path)
    full = summarize(run)
    split, phases = full.split, full.advice.phases
    rows = [r for r in full.rows if r.checkpoint.on_trajectory and x_of(r) is not None and r.get(split).ppl is not None]
    names = [r.name for r in rows]
    onset_row = next((r for r in rows if r.name == phases.onset), None)
    actual = x_of(onset_row) if onset_row else None
    last = x_of(rows[-1])
    m = names.index(phases.min_name)
    ratios = [log_ratio(r.get(split).ppl, phases.min_ppl) for r in rows]
    cut = {f"+{k}": m + k for k in (1, 2, 3, 5)}
    cut["r1.15"] = next((i for i in range(m + 1, len(rows)) if ratios[i] >= 1.15), None)
    out = {"run": str(path), "actual": actual, "last": last, "min": names[m], "points": {}}
    for point, end in cut.items():
        if end is None or end >= len(rows):
            out["points"][point] = None
            continue
        forecast = summarize(_prefix(run, set(names[: end + 1]))).forecast  # merges came later: left out
        at = names[end]
        if forecast is None:
            out["points"][point] = {"at": at, "forecast": None}
            continue
        predicted = _epoch(forecast.onset)
        low, high = _epoch(forecast.low), _epoch(forecast.high)
        if actual is None:  # never purple: the interval holds it when it reaches past the run's end
            error, covered = None, high > last
        elif not math.isfinite(predicted):
            error, covered = math.inf, low <= actual <= high
        else:
            error, covered = abs(predicted - actual), low <= actual <= high
        out["points"][point] = {"at": at, "forecast": forecast, "predicted": predicted, "low": low, "high": high,
                                "error": error, "covered": covered, "last": last}
    return out


def _cell(p) -> str:
    if p is None:
        return "-"
    if p["forecast"] is None:
        return f"{p['at']}: none"
    low = f"{p['low']:g}" if math.isfinite(p["low"]) else "after the end"
    span = f"{low}-{p['high']:g}" if math.isfinite(p["high"]) else (f"{low}-never" if math.isfinite(p["low"]) else low)
    err = f"err {p['error']:g}" if p["error"] is not None else \
        ("beyond" if p["predicted"] > p["last"] else "too early")
    when = f"ep{p['predicted']:g}" if math.isfinite(p["predicted"]) else "after the end"
    return f"{p['at']}: {when} [{span}] {err}{' ok' if p['covered'] else ' MISS'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    results = [backtest(p) for p in args.runs]
    print("| run | min | actual onset | " + " | ".join(POINTS) + " |")
    print("|---|---|---|" + "---|" * len(POINTS))
    for r in results:
        actual = f"ep{r['actual']:g}" if r["actual"] is not None else f"never (to ep{r['last']:g})"
        print(f"| {r['run']} | {r['min']} | {actual} | " + " | ".join(_cell(r["points"][p]) for p in POINTS) + " |")
    print()
    print("| point | forecasts | mean abs error (epochs, purple runs) | interval coverage | never-purple runs forecast beyond their end |")
    print("|---|---|---|---|---|")
    for point in POINTS:
        made = [r["points"][point] for r in results if r["points"][point] and r["points"][point]["forecast"]]
        errors = [min(p["error"], 30) for p in made if p["error"] is not None]  # "never" for a purple run: 30
        mae = f"{sum(errors) / len(errors):.2f}" if errors else "-"
        coverage = f"{sum(p['covered'] for p in made)}/{len(made)}" if made else "-"
        never = [p["predicted"] > p["last"] for p in made if p["error"] is None]
        print(f"| {point} | {len(made)} | {mae} | {coverage} | {sum(never)}/{len(never)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
