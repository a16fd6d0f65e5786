"""Wall time of ``overmem eval --task`` over a whole run against lm-evaluation-harness run once
per checkpoint (its usual use: ``lm_eval --model hf --model_args pretrained=BASE,peft=CKPT``),
same rows, same generation settings (the task's own, greedy), same batch size; and whether
the accuracies agree.

The run: the shipped tiny model with a LoRA adapter per epoch, trained on the test task
(tests/data/lm_eval_task/arith.yaml, 16 rows). Both sides start a fresh process, as a user
would; lm-eval's processes load the base and one adapter each, overmem's loads the base once.
Run from the repository root: .venv/bin/python benchmarks/lm_eval_task.py [--epochs 8] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TASK_DIR = ROOT / "tests" / "data" / "lm_eval_task"
TASK_YAML = TASK_DIR / "arith.yaml"
TASK = "overmem_arith"
PY = sys.executable


def train(out: Path, epochs: int) -> None:
    from overmem.data.template import PromptFormat
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import train as run_training

    rows = [json.loads(line) for line in (TASK_DIR / "test.jsonl").read_text().splitlines()]
    fit = out.parent / "fit.jsonl"
    fit.write_text("".join(json.dumps({"query": r["question"], "response": " " + r["answer"]}) + "\n" for r in rows))
    run_training(build_config(model="tiny", data=DataOptions(str(fit), eval_size=2), out=str(out), method="lora",
                              epochs=epochs, lr=6e-3, batch_size=4, micro_batch_size=4, max_len=256,
                              template=PromptFormat.parse("raw").to_json()))


def timed_run(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def overmem_eval(run: Path, batch_size: int) -> tuple[float, dict[str, float]]:
    seconds = timed_run([PY, "-m", "overmem_tui.cli", "eval", str(run), "--task", str(TASK_YAML), "--splits", TASK,
                         "--backend", "hf", "--batch-size", str(batch_size)])
    from overmem.rundir import load_run

    acc = {m.checkpoint: m.value for m in load_run(run).metrics
           if m.split == TASK and m.metric == "acc" and m.aggregate == "mean"}
    return seconds, acc


def lm_eval_per_checkpoint(run: Path, batch_size: int, out: Path) -> tuple[float, dict[str, float]]:
    base = json.loads((run / "run.json").read_text())["base_model"]["path"]
    total, acc = 0.0, {}
    for ckpt in ["ep0"] + sorted((p.name for p in (run / "checkpoints").iterdir()), key=lambda n: int(n[2:])):
        model_args = f"pretrained={base},dtype=float32" + (f",peft={run / 'checkpoints' / ckpt}" if ckpt != "ep0" else "")
        result = out / ckpt
        total += timed_run([PY, "-m", "lm_eval", "--model", "hf", "--model_args", model_args, "--tasks", str(TASK_YAML),
                            "--include_path", str(TASK_DIR), "--batch_size", str(batch_size), "--device", "cpu",
                            "--output_path", str(result)])
        found = next(result.rglob("results_*.json"))
        acc[ckpt] = json.loads(found.read_text())["results"][TASK]["exact_match,strict-match"]
    return total, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(run, args.epochs)
        ours, our_acc = overmem_eval(run, args.batch_size)
        theirs, their_acc = lm_eval_per_checkpoint(run, args.batch_size, Path(tmp) / "lm_eval")
    n = len(their_acc)
    same = sum(abs(our_acc.get(k, -1) - v) < 1e-12 for k, v in their_acc.items())
    print(f"{n} checkpoints (the base and {n - 1} LoRA epochs) x 16 rows of {TASK}, batch size {args.batch_size}")
    print(f"overmem eval --task (one process, the base loaded once): {ours:7.1f} s")
    print(f"lm-eval once per checkpoint ({n} processes):           {theirs:7.1f} s")
    print(f"ratio lm-eval / overmem: {theirs / ours:.2f}x; accuracies identical on {same} of {n} checkpoints")
    for k in their_acc:
        print(f"  {k:5s} overmem {our_acc.get(k, float('nan')):.4f}  lm-eval {their_acc[k]:.4f}")


if __name__ == "__main__":
    main()
