"""Every prefix of a run is a valid run: what a live evaluator leaves behind must render.

Real runs' metrics.jsonl files are replayed line by line (overmem's own with in-process
evaluation, one evaluated afterwards as follow mode does, a Trainer folder with an
overlay) through summarize, ``recommend --json`` and the watch screen's view builder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from overmem.phases import Thresholds
from overmem.rundir import load_run
from overmem.summary import summarize, summary_json
from overmem_tui.cli import app
from overmem_tui.state import make_view

pytestmark = pytest.mark.slow


def _trained(out: Path, in_process: bool) -> Path:
    from overmem.evaluation.inprocess import EvaluateAfterCheckpoint
    from overmem.evaluation.runner import EvalOptions, Evaluator
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import train

    cfg = build_config(model="tiny", data=DataOptions("synthetic-math", train_size=16, eval_size=4), out=str(out),
                       method="lora", r=8, alpha=16, epochs=3, batch_size=8, micro_batch_size=8, lr=3e-3,
                       max_len=256, eval_options={"max_new_tokens": 24, "batch_size": 8})
    train(cfg, after_checkpoint=EvaluateAfterCheckpoint() if in_process else None)
    if not in_process:
        Evaluator(out, EvalOptions(backend="hf", max_new_tokens=24, batch_size=8)).evaluate_pending()
    return out


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, trainer_output, toy_llama, evaluated_source):
    root = tmp_path_factory.mktemp("prefixes")
    trainer = root / "trainer"
    shutil.copytree(trainer_output, trainer)
    rows = root / "val.jsonl"
    rows.write_text("".join(json.dumps({"query": f"w{i} w{i + 1}", "response": f"w{i + 2} #### {i}"}) + "\n"
                            for i in range(6)))
    result = CliRunner().invoke(app, ["eval", str(trainer), "--split-file", f"val={rows}", "--base", str(toy_llama),
                                      "--backend", "hf", "--max-new-tokens", "4", "--template", "raw"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return {"in-process": (_trained(root / "inproc", True), "metrics.jsonl"),
            # trained, then evaluated afterwards as follow mode does: the session's run (conftest.py)
            "follow": (shutil.copytree(evaluated_source, root / "after"), "metrics.jsonl"),
            "trainer+overlay": (trainer, "overmem/metrics.jsonl")}


@pytest.mark.parametrize("kind", ["in-process", "follow", "trainer+overlay"])
def test_every_prefix_renders(real_runs, kind, tmp_path):
    source, metrics = real_runs[kind]
    work = tmp_path / "run"
    shutil.copytree(source, work)
    lines = (source / metrics).read_text().splitlines(keepends=True)
    assert len(lines) > 10
    runner = CliRunner()
    for k in range(len(lines) + 1):
        (work / metrics).write_text("".join(lines[:k]))
        run = load_run(work)
        summary = summarize(run)
        obj = summary_json(summary)
        if obj["recommended"] is None and summary.splits:
            assert obj["reasons"], k  # the advice says what is still missing
        view = make_view(run, None, Thresholds())
        assert view.error is None and view.summary is not None, (k, view.error)
        result = runner.invoke(app, ["recommend", str(work), "--json"])
        if summary.splits:
            assert result.exit_code == 0, (k, result.output, result.stderr)
            assert json.loads(result.stdout)["recommended"] == obj["recommended"]
        else:  # nothing evaluated yet: one line that says so
            assert result.exit_code == 3 and "no evaluated metrics" in result.stderr


def test_a_checkpoint_with_ppl_but_no_accuracy_yet():
    """The state that crashed the advice: the lowest ppl belongs to a checkpoint not yet graded."""
    from overmem.advice import advise
    from overmem.phases import Point

    advice = advise([Point("ep0", 3.1, 0.0, 100), Point("ep1", 1.2, None, None)], "val")
    assert advice.recommended is None
    assert "waiting for the accuracy of ep1" in advice.reasons[0]
