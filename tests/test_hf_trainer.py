"""Reading Hugging Face Trainer output folders, on a real Trainer run."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from overmem.rundir import load_run
from overmem.rundir.hf_trainer import parse_eval_entry, trainer_metrics
from overmem.summary import summarize
from overmem_tui.cli import app


@pytest.mark.parametrize(
    "entry,expected",
    [
        # bookkeeping numbers are not metrics
        ({"eval_loss": 1.0, "eval_runtime": 3.0, "eval_samples_per_second": 9.0, "epoch": 1.0},
         {("val", "loss", 1.0)}),
        ({"eval_test_loss": 2.0, "eval_test_accuracy": 0.5, "eval_test_runtime": 1.0},
         {("test", "loss", 2.0), ("test", "accuracy", 0.5)}),
        ({"eval_loss": 1.0, "eval_accuracy": 75.0}, {("val", "loss", 1.0), ("val", "accuracy", 75.0)}),
        # TRL's token accuracy has no split of its own: it is val's, under its own name
        ({"eval_loss": 1.0, "eval_mean_token_accuracy": 0.6},
         {("val", "loss", 1.0), ("val", "mean_token_accuracy", 0.6)}),
        ({"eval_gsm8k_loss": 1.0, "eval_gsm8k_exact_match": 0.3},
         {("gsm8k", "loss", 1.0), ("gsm8k", "exact_match", 0.3)}),
        ({"eval_loss": 1.0, "eval_flag": True}, {("val", "loss", 1.0)}),
        # eval_dataset={"val": ..., "test": ...}: "val" is named like any split
        ({"eval_val_loss": 1.0, "eval_val_accuracy": 0.5, "eval_val_mean_token_accuracy": 0.4},
         {("val", "loss", 1.0), ("val", "accuracy", 0.5), ("val", "mean_token_accuracy", 0.4)}),
        ({"loss": 1.0, "learning_rate": 1e-4}, set()),
    ],
)
def test_parse_eval_entry(entry, expected):
    assert set(parse_eval_entry(entry)) == expected


def test_trainer_numbers_never_become_overmem_accuracy():
    triples = [("checkpoint-1", "val", "loss", 1.0), ("checkpoint-1", "val", "accuracy", 80.0),
               ("checkpoint-2", "val", "accuracy", 90.0), ("checkpoint-1", "val", "mean_token_accuracy", 0.7)]
    metrics = {(m.checkpoint, m.metric): m for m in trainer_metrics(triples)}
    assert metrics[("checkpoint-1", "ppl")].value == pytest.approx(math.e)
    assert metrics[("checkpoint-1", "ppl")].aggregate == "trainer"
    # a series logged in percent is scaled once, as a series; token accuracy stays as logged
    assert metrics[("checkpoint-1", "trainer/accuracy")].value == pytest.approx(0.8)
    assert metrics[("checkpoint-2", "trainer/accuracy")].value == pytest.approx(0.9)
    assert metrics[("checkpoint-1", "trainer/mean_token_accuracy")].value == pytest.approx(0.7)
    assert not any(m.metric == "acc" for m in metrics.values())


def test_real_trainer_output_reads_as_a_run(trainer_output):
    run = load_run(trainer_output, strict=True)
    assert run.source == "hf-trainer"
    steps = [c.step for c in run.checkpoints]
    assert steps == [4, 8, 12]  # 32 samples / batch 8 = 4 steps per epoch
    assert [c.name for c in run.checkpoints] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    assert all(c.path is not None and c.path.name == c.name for c in run.checkpoints)
    assert [c.epoch for c in run.checkpoints] == [1.0, 2.0, 3.0]
    state = json.loads((trainer_output / "checkpoint-12" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_val_loss" in e]
    assert len(evals) == 3
    val = {m.checkpoint: m.value for m in run.metrics if m.split == "val" and m.metric == "ppl"}
    assert val["checkpoint-12"] == pytest.approx(math.exp(evals[-1]["eval_val_loss"]))
    token_acc = {m.checkpoint: m.value for m in run.metrics if m.split == "test" and m.metric == "trainer/accuracy"}
    tests = [e for e in state["log_history"] if "eval_test_accuracy" in e]
    assert token_acc["checkpoint-4"] == pytest.approx(tests[0]["eval_test_accuracy"])
    assert not [m for m in run.metrics if m.metric == "acc"]  # no generation accuracy until overmem eval
    assert run.train_logs and run.train_logs[0].lr > 0
    assert run.status == "finished"
    summary = summarize(run)
    assert summary.splits == ("val", "test")
    assert summary.advice.recommended in {"checkpoint-4", "checkpoint-8", "checkpoint-12"}


def test_top_level_state_wins(trainer_output, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(trainer_output, copy)
    state = json.loads((copy / "checkpoint-12" / "trainer_state.json").read_text())
    state["log_history"] = [e for e in state["log_history"] if e.get("step", 0) <= 8]
    (copy / "trainer_state.json").write_text(json.dumps(state))
    run = load_run(copy)
    assert {m.checkpoint for m in run.metrics} == {"checkpoint-4", "checkpoint-8"}
    assert "checkpoint-12" in {c.name for c in run.checkpoints}  # the folder still counts


def test_recommend_cli_on_trainer_output(trainer_output):
    result = CliRunner().invoke(app, ["recommend", str(trainer_output), "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.output)
    assert obj["source"] == "hf-trainer" and obj["split"] == "val"
    assert [c["name"] for c in obj["checkpoints"]] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    assert all(c["metrics"]["val"]["n"] is None for c in obj["checkpoints"])
