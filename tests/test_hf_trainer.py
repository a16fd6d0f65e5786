"""Reading Hugging Face Trainer output folders, on a real Trainer run."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from overmem.rundir import load_run
from overmem.rundir.hf_trainer import parse_eval_entry
from overmem.summary import summarize
from overmem_tui.cli import app


@pytest.mark.parametrize(
    "entry,expected",
    [
        ({"eval_loss": 1.0, "eval_runtime": 3.0}, {("val", "loss", 1.0)}),
        ({"eval_test_loss": 2.0, "eval_test_accuracy": 0.5}, {("test", "loss", 2.0), ("test", "acc", 0.5)}),
        ({"eval_loss": 1.0, "eval_accuracy": 75.0}, {("val", "loss", 1.0), ("val", "acc", 0.75)}),
        # TRL's token accuracy has no split of its own
        ({"eval_loss": 1.0, "eval_mean_token_accuracy": 0.6}, {("val", "loss", 1.0), ("val", "acc", 0.6)}),
        ({"eval_gsm8k_loss": 1.0, "eval_gsm8k_exact_match": 0.3}, {("gsm8k", "loss", 1.0), ("gsm8k", "acc", 0.3)}),
        # "accuracy" beats a vaguer "acc_norm" for the same split
        ({"eval_loss": 1.0, "eval_acc_norm": 0.2, "eval_accuracy": 0.4}, {("val", "loss", 1.0), ("val", "acc", 0.4)}),
        ({"loss": 1.0, "learning_rate": 1e-4}, set()),
    ],
)
def test_parse_eval_entry(entry, expected):
    assert set(parse_eval_entry(entry)) == expected


def test_real_trainer_output_reads_as_a_run(trainer_output):
    run = load_run(trainer_output, strict=True)
    assert run.source == "hf-trainer"
    steps = [c.step for c in run.checkpoints]
    assert steps == [4, 8, 12]  # 32 samples / batch 8 = 4 steps per epoch
    assert all(c.path is not None and c.path.name == f"checkpoint-{c.step}" for c in run.checkpoints)
    assert [c.epoch for c in run.checkpoints] == [1.0, 2.0, 3.0]
    state = json.loads((trainer_output / "checkpoint-12" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_val_loss" in e]
    assert len(evals) == 3
    val = {m.checkpoint: m.value for m in run.metrics if m.split == "val" and m.metric == "ppl"}
    assert val["step12"] == pytest.approx(math.exp(evals[-1]["eval_val_loss"]))
    acc = {m.checkpoint: m.value for m in run.metrics if m.split == "test" and m.metric == "acc"}
    tests = [e for e in state["log_history"] if "eval_test_accuracy" in e]
    assert acc["step4"] == pytest.approx(tests[0]["eval_test_accuracy"])
    assert run.train_logs and run.train_logs[0].lr > 0
    assert run.status == "finished"
    summary = summarize(run)
    assert summary.splits == ("val", "test")
    assert summary.advice.recommended in {"step4", "step8", "step12"}


def test_top_level_state_wins(trainer_output, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(trainer_output, copy)
    state = json.loads((copy / "checkpoint-12" / "trainer_state.json").read_text())
    state["log_history"] = [e for e in state["log_history"] if e.get("step", 0) <= 8]
    (copy / "trainer_state.json").write_text(json.dumps(state))
    run = load_run(copy)
    assert {m.checkpoint for m in run.metrics} == {"step4", "step8"}
    assert "step12" in {c.name for c in run.checkpoints}  # the folder still counts


def test_recommend_cli_on_trainer_output(trainer_output):
    result = CliRunner().invoke(app, ["recommend", str(trainer_output), "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)
    assert obj["source"] == "hf-trainer" and obj["split"] == "val"
    assert [c["name"] for c in obj["checkpoints"]] == ["step4", "step8", "step12"]
    assert all(c["metrics"]["val"]["n"] is None for c in obj["checkpoints"])
