"""The newcomer path: train the shipped tiny model on synthetic-math past the point of
over-memorization while evaluating every checkpoint as it appears, then carry out
the recommended merge and evaluate it.

Training runs in a process of its own and evaluation in this one, so on two cores
both proceed together and the curves grow live; once training ends, a second
evaluator process takes the checkpoints still waiting.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from overmem.errors import OutputExists, OvermemError, UsageError
from overmem.rundir.outputs import check_new_run, mark_output, read_marker
from overmem.evaluation.options import EvalOptions
from overmem.evaluation.runner import Evaluator
from overmem.rundir import load_run
from overmem.summary import Summary, summarize
from overmem.stopping import DEFAULT_PATIENCE, last_stop
from overmem.table import merge_lines
from overmem.training.setup import DataOptions, build_config

# The embedded default: full finetuning of the tiny model on 200 synthetic-math problems
# (40 seed questions in 5 versions each), batch 8, a linear schedule over 30 epochs. The
# model memorizes each seed question's wording within a few epochs, then writes new
# questions that way: validation perplexity of other valid wordings climbs to twice its
# minimum and beyond while accuracy stays at its best (scripts/demo_seeds.py checks the
# promises of core/demo_check.py on several seeds and thread counts).
DEMO_LR = 3e-4
SWEEP_LRS = (1.5e-4, 3e-4, 6e-4)


@dataclass(frozen=True)
class DemoSettings:
    out: Path
    lr: float = DEMO_LR
    seed: int = 0
    epochs: int = 30
    train_size: int = 200
    eval_size: int = 100
    method: str = "full"
    loss: str = "sft"
    batch_size: int = 8
    max_new_tokens: int = 64
    lrs: tuple[float, ...] = ()  # sweep: several learning rates, one run each
    force: bool = False
    stop_at: str = "none"  # train --stop-at: stop once the run has turned purple (overmem.stopping)
    patience: int = DEFAULT_PATIENCE

    def run_dirs(self) -> list[Path]:
        if not self.lrs:
            return [self.out]
        return [self.out / f"lr-{lr:g}" for lr in self.lrs]


@dataclass
class DemoProgress:
    """What the demo has done so far (read by front ends; written by the demo thread)."""

    stage: str = "starting"
    done: bool = False
    error: str | None = None
    merges: dict = field(default_factory=dict)  # run dir -> merge checkpoint name
    seconds: float = 0.0


def prepare(settings: DemoSettings) -> None:
    """Make room for the demo's folder: ``--force`` replaces only a previous demo's output."""
    out = settings.out
    if out.exists() or out.is_symlink():
        if not settings.force:
            raise OutputExists(f"{out} exists (use --force to replace it, or --out)")
        if not _previous_demo(out):
            raise UsageError(f"--out: --force replaces only a previous demo's folder, and {out} is not one; remove "
                             "it yourself or choose another --out")
        if out.is_symlink():
            out.unlink()
        else:
            shutil.rmtree(out)
    check_new_run(out)
    out.mkdir(parents=True)
    mark_output(out, "demo")


def _previous_demo(out: Path) -> bool:
    """A folder an earlier demo wrote (its output marker says so), or a link (only the link goes)."""
    return out.is_symlink() or out.is_dir() and (read_marker(out) or {}).get("kind") == "demo"


def train_config(settings: DemoSettings, run_dir: Path, lr: float):
    """The demo's training. With a stop rule it evaluates each checkpoint in process, before the
    next epoch (train --eval): an evaluator beside it lags behind the tiny model's fast epochs,
    and the rule can only stop at the evaluations it has."""
    stopping = settings.stop_at != "none"
    return build_config(
        model="tiny",
        data=DataOptions("synthetic-math", train_size=settings.train_size, eval_size=settings.eval_size),
        out=str(run_dir), method=settings.method, loss=settings.loss, seed=settings.seed, lr=lr, epochs=settings.epochs,
        batch_size=settings.batch_size, micro_batch_size=settings.batch_size, max_len=256, schedule="linear",
        warmup_steps=0, stop_at=settings.stop_at, patience=settings.patience,
        eval_options=_eval_options(settings) if stopping else None,
    )


def _subprocess_env() -> dict:
    # the installed package "overmem" runs, whatever "core" the working directory holds
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start_training(cfg) -> subprocess.Popen:
    fd, path = tempfile.mkstemp(suffix=".json", prefix="overmem-demo-")
    with os.fdopen(fd, "w") as fh:
        json.dump(cfg.to_json(), fh)
    return subprocess.Popen([sys.executable, "-m", "overmem.training", path], env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _eval_options(settings: DemoSettings) -> dict:
    return {"backend": "hf", "max_new_tokens": settings.max_new_tokens, "batch_size": 50}


def _start_second_evaluator(settings: DemoSettings, run_dir: Path) -> subprocess.Popen:
    """Once training has ended its core is free: a second evaluator takes the checkpoints
    still waiting (claim files keep the two apart). If it fails, its claims go stale
    and the first evaluator takes them over."""
    return subprocess.Popen([sys.executable, "-m", "overmem.evaluation", str(run_dir),
                             json.dumps(_eval_options(settings))], env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def train_and_follow(settings: DemoSettings, run_dir: Path, lr: float, progress: DemoProgress) -> None:
    """Train in a subprocess; evaluate each checkpoint here as soon as it is complete,
    and in a second process too once training has finished."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the training process has the other core; restored at the end
    try:
        _train_and_follow(settings, run_dir, lr, progress)
    finally:
        torch.set_num_threads(threads)


def _train_and_follow(settings: DemoSettings, run_dir: Path, lr: float, progress: DemoProgress) -> None:
    cfg = train_config(settings, run_dir, lr)
    proc = _start_training(cfg)
    helpers: list[subprocess.Popen] = []

    def stop_following() -> bool:
        """True when training failed; once it has ended well, starts the second evaluator."""
        code = proc.poll()
        if code == 0 and not helpers:
            helpers.append(_start_second_evaluator(settings, run_dir))
        return code not in (None, 0)

    try:
        while not (run_dir / "run.json").exists():
            if proc.poll() is not None:
                raise OvermemError(f"training failed: {(proc.stderr.read() or '').strip().splitlines()[-1:]}")
            time.sleep(0.1)
        progress.stage = f"training {run_dir.name} (lr {lr:g}) and evaluating as checkpoints appear"
        evaluator = Evaluator(run_dir, EvalOptions(**_eval_options(settings)))
        evaluator.follow(interval=0.2, should_stop=stop_following)
        if proc.wait() != 0:
            tail = (proc.stderr.read() or "").strip().splitlines()[-1:]
            raise OvermemError(f"training failed: {tail[0] if tail else 'exit code ' + str(proc.returncode)}")
        for helper in helpers:  # its last checkpoint is recorded; let it release its claim and exit
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for p in (proc, *helpers):
            if p.poll() is None:
                p.kill()
            p.wait()


def merge_and_evaluate(settings: DemoSettings, run_dir: Path, progress: DemoProgress) -> str | None:
    """Carry out the suggested merge (adapter or full form, as the inputs allow) and evaluate it."""
    from overmem.merging.merge import plan_merge, run_merge

    summary = summarize(load_run(run_dir))
    pair = summary.advice.merge
    if not pair:
        return None
    progress.stage = f"merging {pair[0]} + {pair[1]}"
    info = run_merge(plan_merge(run_dir, list(pair), force=True))
    progress.stage = f"evaluating {info.name}"
    Evaluator(run_dir, EvalOptions(**_eval_options(settings), checkpoints=(info.name,))).evaluate_pending()
    return info.name


def run_demo(settings: DemoSettings, progress: DemoProgress | None = None) -> DemoProgress:
    progress = progress or DemoProgress()
    start = time.time()
    try:
        lrs = settings.lrs or (settings.lr,)
        for run_dir, lr in zip(settings.run_dirs(), lrs):
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            train_and_follow(settings, run_dir, lr, progress)
            progress.merges[str(run_dir)] = merge_and_evaluate(settings, run_dir, progress)
        progress.stage = "done"
    except Exception as exc:  # reported to the front end, which re-raises typed errors as one line
        progress.error = str(exc)
        raise
    finally:
        progress.seconds = time.time() - start
        progress.done = True
    return progress


def start_in_background(settings: DemoSettings) -> tuple[threading.Thread, DemoProgress, list]:
    progress = DemoProgress()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_demo(settings, progress)
        except BaseException as exc:  # handed to the main thread, which raises it
            errors.append(exc)

    thread = threading.Thread(target=target, name="overmem-demo", daemon=True)
    thread.start()
    return thread, progress, errors


def outcome(run_dir: Path, merge: str | None) -> tuple[Summary, list[str]]:
    """The final summary and plain-language lines about the merge against the latest checkpoint."""
    summary = summarize(load_run(run_dir))
    trained = [r for r in summary.rows if r.checkpoint.trained]
    lines = [saved_line(summary.run, trained[-1].checkpoint.epoch)] if trained and last_stop(summary.run) else []
    if merge is None or not trained:
        return summary, lines
    return summary, lines + merge_lines(summary, merge, [trained[-1].name], label="the latest ")


def saved_line(run, stopped_epoch: float | None) -> str:
    """"stopped at ep17 of 30: 43% of the training saved", for a run that stopped itself."""
    stop = last_stop(run)
    planned = run.info.hyperparameters.get("epochs") if run.info else None
    if stop is None or not isinstance(planned, (int, float)) or not planned or stopped_epoch is None:
        return f"stopped after {stop.checkpoint}: {stop.reason}" if stop else ""
    saved = 1 - stopped_epoch / planned
    return f"stopped at {stop.checkpoint} of {planned:g} epochs: {saved:.0%} of the training saved ({stop.reason})"
