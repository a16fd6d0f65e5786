"""OvermemCallback under several processes (2 gloo CPU processes under torchrun).

The main process evaluates each saved checkpoint while the other waits for it by
polling the claim file, not inside a collective: however long the evaluation takes,
no collective times out. The evaluation here takes longer than the process group's
timeout on purpose; a callback that let the other process run on into the next
all-reduce would fail with a gloo timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from overmem.rundir import load_run
from tests.helpers import ROOT

PG_TIMEOUT_S = 12  # the process group's timeout: the slack of a loaded machine between the ranks
EVAL_EXTRA_S = 6  # how much longer than usual each evaluation takes, beyond that timeout

SCRIPT = textwrap.dedent("""
    import datetime, os, sys, time
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    import overmem.callback
    from overmem.callback import OvermemCallback
    from overmem.models.loading import load_tokenizer, resolve_base
    from tests.helpers import trainer_dataset

    out, trainer_dir, plain, extra = sys.argv[1], sys.argv[2], sys.argv[3] == "plain", float(sys.argv[4])
    stop = sys.argv[3] == "stop"
    rows = [{"query": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}. The answer is: {a + b}"}
            for a, b in [(2, 3), (4, 5), (7, 1), (6, 2), (3, 3), (8, 1), (5, 4), (9, 0)]]
    base = resolve_base("tiny")
    tok = load_tokenizer(base)
    ds = trainer_dataset(tok, rows)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base["path"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=%d))

    from overmem.evaluation.runner import Evaluator

    evaluate_checkpoint = Evaluator.evaluate_checkpoint

    def slow_evaluation(self, ckpt, need):  # longer than the process group's timeout, claim held
        records = evaluate_checkpoint(self, ckpt, need)
        time.sleep(extra)
        return records

    Evaluator.evaluate_checkpoint = slow_evaluation
    # the waiting rank looks every 0.1 s, not every 2: its slack before the timeout is the timeout's
    overmem.callback.WAIT_POLL = 0.1

    class Callback(OvermemCallback):
        if plain:  # what a naive callback does: the other processes simply run on
            def _wait_for_main(self, name):
                return None
        if stop:  # watch's stop key pressed while ep1 is being evaluated
            def _decide(self, name, state):
                if name == "ep1":
                    from overmem.training.early_stop import request_stop

                    request_stop(self.rundir.path)
                return super()._decide(name, state)

    args = TrainingArguments(output_dir=trainer_dir, num_train_epochs=4 if stop else 2, per_device_train_batch_size=2,
                             learning_rate=1e-3, save_strategy="epoch", logging_steps=1, report_to="none",
                             use_cpu=True, disable_tqdm=True, ddp_backend="gloo")
    # with use_cpu=True transformers does not pass ddp_timeout on: the process group is
    # started here, with the short timeout, and accelerate takes it as it is
    cb = Callback(out, tokenizer=tok, splits={"val": rows[:4]}, max_new_tokens=8)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()
    assert type(trainer.model_wrapped).__name__ == "DistributedDataParallel"
    assert args.parallel_mode.name == "DISTRIBUTED" and dist.get_world_size() == 2  # DDP, not 2 lone runs
    # one write of one line (stdout unbuffered): the two ranks' output shares a pipe and rank 0 also
    # prints the Trainer's logs (overmem's results among them), which must not split this line
    sys.stdout.write(f"rank {os.environ.get('RANK')} done at epoch {trainer.state.epoch}\\n")
""" % PG_TIMEOUT_S)


def _torchrun(tmp_path, variant: str, extra: float = PG_TIMEOUT_S + EVAL_EXTRA_S):
    script = tmp_path / "train_with_callback.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / f"run-{variant}"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           str(script), str(out), str(tmp_path / f"trainer-{variant}"), variant,
                           str(extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


@pytest.mark.slow
def test_callback_under_two_processes_waits_without_a_collective(tmp_path):
    proc, out = _torchrun(tmp_path, "waiting")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done at epoch") == 2
    run = load_run(out, strict=True)
    assert run.status == "finished"
    assert [c.name for c in run.checkpoints] == ["ep0", "ep1", "ep2"]  # ep0: the base
    evaluated = {(m.checkpoint, m.split, m.metric) for m in run.metrics if m.aggregate == "mean"}
    assert {("ep1", "val", "ppl"), ("ep1", "val", "acc"), ("ep2", "val", "ppl"), ("ep2", "val", "acc")} <= evaluated
    claims = [p.name for p in (out / "claims").glob("*") if not p.name.startswith(".")] \
        if (out / "claims").exists() else []
    assert claims == []  # released after each evaluation (.lock is the claims folder's own lock)


@pytest.mark.slow
def test_a_stop_under_two_processes_stops_every_rank_at_the_same_save(tmp_path):
    proc, out = _torchrun(tmp_path, "stop", extra=0.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the line is one write, but the other rank's Trainer log may have begun a line just before it
    done = re.findall(r"rank (\d) done at epoch (\S+)\n", proc.stdout)
    assert sorted(done) == [("0", "1.0"), ("1", "1.0")], proc.stdout[-3000:]
    run = load_run(out, strict=True)
    assert run.status == "stopped" and [c.name for c in run.checkpoints] == ["ep0", "ep1"]
    assert [(s.by, s.done, s.checkpoint) for s in run.stops] == [("user", False, None), ("user", True, "ep1")]


@pytest.mark.slow
def test_a_callback_that_does_not_wait_times_out_the_other_process(tmp_path):
    """The control: the same run with the waiting taken out fails on the gloo timeout,
    so the test above shows the waiting, not a lenient timeout."""
    proc, _ = _torchrun(tmp_path, "plain")
    assert proc.returncode != 0
    assert "timed out" in proc.stderr.lower() or "timeout" in proc.stderr.lower(), proc.stderr[-3000:]
