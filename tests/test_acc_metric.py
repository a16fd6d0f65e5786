"""--acc-metric: a Trainer-logged metric the user vouches for as generation accuracy drives phases.

The session's real Trainer folder (conftest.trainer_output) logged ``eval_val_accuracy`` and
``eval_test_accuracy`` at every epoch; by default they are never accuracy.
"""

from __future__ import annotations

import json
import shutil

import pytest

from overmem.errors import UnknownMetric
from overmem.rundir import load_run
from overmem.summary import summarize, summary_json
from tests.helpers import run_cli


@pytest.fixture
def trainer_run(trainer_output, tmp_path):
    dst = tmp_path / "out"
    shutil.copytree(trainer_output, dst)
    return dst


def _logged(run, split: str) -> dict[str, float]:
    return {m.checkpoint: m.value for m in run.metrics if m.split == split and m.metric == "trainer/accuracy"}


@pytest.mark.parametrize("name, splits", [
    ("eval_val_accuracy", {"val"}), ("eval_test_accuracy", {"test"}), ("eval_accuracy", {"val"}),
    ("accuracy", {"val", "test"}), ("trainer/accuracy", {"val", "test"}),
])
def test_a_trainer_metric_is_the_accuracy_of_its_splits(trainer_run, name, splits):
    run = load_run(trainer_run)
    summary = summarize(run, "val" if "val" in splits else "test", acc_metric=name)
    assert summary.accuracy == {s: "trainer/accuracy" for s in splits}
    for split in ("val", "test"):
        logged = _logged(run, split)
        assert logged, split
        for row in summary.rows:
            expected = logged.get(row.name) if split in splits else None
            assert row.get(split).acc == expected, (name, split, row.name)
    verdicts = [summary.advice.phases.of(r.name) for r in summary.rows if r.get(summary.split).acc is not None]
    assert verdicts and all(v is not None for v in verdicts)
    data = summary_json(summary)
    assert data["acc_metric"] == "trainer/accuracy"
    assert {s for s, m in data["acc_metrics"].items() if m == "trainer/accuracy"} == splits


def test_by_default_a_trainer_metric_is_never_accuracy(trainer_run):
    summary = summarize(load_run(trainer_run))
    assert summary.accuracy == {} and summary.acc_metric == "acc"
    assert all(r.get(s).acc is None for r in summary.rows for s in ("val", "test"))


def test_a_name_the_run_never_logged_is_one_clear_error(trainer_run):
    with pytest.raises(UnknownMetric, match=r"no such Trainer metric \(logged: accuracy\)"):
        summarize(load_run(trainer_run), acc_metric="eval_val_rouge")
    result = run_cli("recommend", str(trainer_run), "--acc-metric", "eval_bleu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "eval_bleu" in result.stderr


def test_a_metric_outside_zero_to_one_is_no_accuracy(trainer_run):
    from dataclasses import replace

    run = load_run(trainer_run)
    bad = [replace(m, value=3.5) if m.metric == "trainer/accuracy" else m for m in run.metrics]
    with pytest.raises(UnknownMetric, match="is not an accuracy"):
        summarize(replace(run, metrics=tuple(bad)), acc_metric="accuracy")


def test_eval_remembers_it_and_the_json_says_what_drove_the_phases(trainer_run, tmp_path):
    from overmem.data.loaders import SplitSpec, resolve_source
    from overmem.evaluation.definitions import Definitions, define
    from overmem.rundir import RunReader

    rows = tmp_path / "val.jsonl"
    rows.write_text(json.dumps({"query": "a b", "response": "c #### 1"}) + "\n")
    spec = SplitSpec(resolve_source(str(rows))).to_json()
    with pytest.raises(UnknownMetric):  # nothing is recorded for a name the run never logged
        define(RunReader(trainer_run), Definitions({"val": spec}, acc_metric="eval_nope"))
    assert not (trainer_run / "overmem" / "run.json").exists()
    define(RunReader(trainer_run), Definitions({"val": spec}, acc_metric="eval_val_accuracy"))
    assert json.loads((trainer_run / "overmem" / "run.json").read_text())["data"]["acc_metric"] == "eval_val_accuracy"

    remembered = run_cli("recommend", str(trainer_run), "--json")
    assert remembered.returncode == 0, remembered.stderr
    data = json.loads(remembered.stdout)
    assert data["split"] == "val" and data["acc_metric"] == "trainer/accuracy"
    logged = _logged(load_run(trainer_run), "val")
    assert {c["name"]: c["metrics"]["val"]["acc"] for c in data["checkpoints"] if c["name"] in logged} == logged
    own = json.loads(run_cli("recommend", str(trainer_run), "--json", "--acc-metric", "acc").stdout)
    assert own["acc_metric"] == "acc"
    assert all(c["metrics"].get("val", {}).get("acc") is None for c in own["checkpoints"])


@pytest.mark.parametrize("recorded", ["eval_nope", 123])
def test_a_recorded_acc_metric_that_does_not_fit_is_a_corrupt_run(trainer_run, tmp_path, recorded):
    from overmem.data.loaders import SplitSpec, resolve_source
    from overmem.evaluation.definitions import Definitions, define
    from overmem.rundir import RunReader

    rows = tmp_path / "val.jsonl"
    rows.write_text(json.dumps({"query": "a b", "response": "c #### 1"}) + "\n")
    define(RunReader(trainer_run), Definitions({"val": SplitSpec(resolve_source(str(rows))).to_json()},
                                               acc_metric="eval_val_accuracy"))
    overlay = trainer_run / "overmem" / "run.json"
    info = json.loads(overlay.read_text())
    info["data"]["acc_metric"] = recorded
    overlay.write_text(json.dumps(info))
    result = run_cli("recommend", str(trainer_run))
    assert result.returncode == 3 and "data.acc_metric" in result.stderr and "Traceback" not in result.stderr
    assert run_cli("recommend", str(trainer_run), "--acc-metric", "acc").returncode == 0
