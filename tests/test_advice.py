"""The recommendation, its reasons, the naive rules and the merge suggestion."""

from __future__ import annotations

from overmem.advice import advise
from overmem.phases import Point, Thresholds
from overmem.rundir import load_run
from overmem.summary import summarize, summary_json
from tests.conftest import DATA


def test_golden_paper_run_decisions():
    summary = summarize(load_run(DATA / "paper_run"))
    advice = summary.advice
    assert summary.splits == ("train", "val", "test")
    assert advice.split == "val"
    assert advice.recommended == "ep5"
    assert advice.merge == ("ep5", "ep10")
    assert advice.phases.onset == "ep7"
    assert dict(advice.naive) == {"lowest ppl": "ep3", "highest accuracy": "ep8", "last checkpoint": "ep10"}
    text = "\n".join(advice.reasons)
    assert "ep5: highest val accuracy (75.5%, n=1319) among the 5 checkpoints" in text
    assert "lowest val ppl picks ep3, 1.5 points less accurate" in text
    assert "highest val accuracy picks ep8, purple" in text
    assert "over-memorizing since ep7" in advice.warnings[0]
    phases = {v.name: v.phase.value for v in advice.phases.verdicts}
    assert [phases[f"ep{i}"] for i in range(11)] == ["black"] * 3 + ["yellow"] * 4 + ["purple"] * 4


def test_band_and_split_options_move_the_choice():
    run = load_run(DATA / "paper_run")
    assert summarize(run, thresholds=Thresholds(band=1.06)).advice.recommended == "ep4"
    assert summarize(run, thresholds=Thresholds(band=1.0)).advice.recommended == "ep3"
    test = summarize(run, split="test").advice
    assert test.split == "test" and test.recommended == "ep5"
    assert summarize(run, split="validation").advice.split == "val"


def test_single_checkpoint_says_so():
    advice = advise([Point("ep1", 3.0, 0.5, 100)], "val")
    assert advice.recommended == "ep1"
    assert advice.merge is None
    assert "only checkpoint" in advice.reasons[0]


def test_missing_metrics_fall_back_and_say_why():
    only_ppl = advise([Point("ep1", 3.0, None), Point("ep2", 2.5, None), Point("ep3", 4.0, None)], "val")
    assert only_ppl.recommended == "ep2"
    assert "no generation accuracy" in only_ppl.reasons[0] and "overmem eval" in only_ppl.reasons[0]
    only_acc = advise([Point("ep1", None, 0.5), Point("ep2", None, 0.7)], "val")
    assert only_acc.recommended == "ep2"
    assert "no perplexity" in only_acc.reasons[0]
    nothing = advise([Point("ep1", None, None)], "val")
    assert nothing.recommended is None and "nothing to recommend" in nothing.reasons[0]
    assert advise([], None).recommended is None


def test_partially_missing_points_are_skipped_not_fatal():
    points = [
        Point("ep0", 9.0, 0.1, 500),
        Point("ep1", 3.1, None),  # accuracy not evaluated yet
        Point("ep2", 3.2, 0.76, 500),
        Point("ep3", 8.0, 0.76, 500),
    ]
    advice = advise(points, "val")
    assert advice.recommended == "ep2"
    assert advice.phases.of("ep1").phase.value == "unknown"
    assert advice.merge == ("ep2", "ep3")


def test_no_merge_without_purple_and_merge_skips_the_base():
    advice = advise([Point("ep0", 9.0, 0.1, 500, mergeable=False), Point("ep1", 3.0, 0.7, 500)], "val")
    assert advice.merge is None
    # the merge always includes the recommended checkpoint: a recommended point that cannot be
    # merged (here the base model) gets no merge, never one of another checkpoint
    base_yellow = [
        Point("ep0", 3.1, 0.76, 500, mergeable=False),
        Point("ep1", 3.2, 0.75, 500),
        Point("ep2", 9.0, 0.76, 500),
    ]
    advice = advise(base_yellow, "val")
    assert advice.recommended == "ep0" and advice.merge is None


def test_summary_json_has_the_documented_shape():
    obj = summary_json(summarize(load_run(DATA / "paper_run")))
    assert {"run", "split", "thresholds", "checkpoints", "recommended", "merge", "reasons"} <= set(obj)
    assert obj["thresholds"] == {"ppl_factor": 1.5, "band": 1.25, "z": 2.0, "rel_tol": 0.1, "min_gain": 0.02,
                                 "acc_margin": 0.02}
    ep3 = next(c for c in obj["checkpoints"] if c["name"] == "ep3")
    assert {"name", "epoch", "step", "phase", "metrics"} <= set(ep3)
    assert ep3["metrics"]["val"]["ppl"] == 3.1 and ep3["metrics"]["val"]["acc"] == 0.74
    assert ep3["metrics"]["val"]["n"] == 1319 and ep3["phase"] == "yellow"
    assert obj["merge"] == ["ep5", "ep10"]


def test_warning_says_when_accuracy_dropped_after_the_onset():
    points = [Point("ep0", 3.0, 0.0, 400), Point("ep1", 1.20, 0.95, 400), Point("ep2", 1.15, 0.96, 400),
              Point("ep3", 1.16, 0.95, 400), Point("ep4", 1.25, 0.95, 400), Point("ep5", 1.40, 0.70, 400)]
    advice = advise(points, "val")
    phases = {v.name: v.phase.value for v in advice.phases.verdicts}
    assert phases["ep4"] == "purple" and phases["ep5"] == "overfit"
    assert advice.warnings == ("val ppl rose while accuracy held from ep4 on (over-memorized); ep5 is "
                               "over-fitted (its accuracy is now clearly below the best too)",)
