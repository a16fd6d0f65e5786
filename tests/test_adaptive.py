"""Adaptive evaluation: the paired test, the margin, the looks' z, the stopping rule (pure),
and ``eval --adaptive`` on a real tiny full-finetuning run (rows once, resume, bad input)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overmem.adaptive import next_look, plan, row_order, schedule
from overmem.phases import Phase, Point, Thresholds, classify, gap_to_best, point_is_high
from overmem.rundir.fields import RecordError
from overmem.rundir.lines import Metric, extends
from overmem.sequential import alpha, final_z, interim_z
from tests.helpers import ROOT, read_jsonl, run_cli

T = Thresholds()


def grades_of(right: set[int], n: int, graded=None) -> str:
    graded = range(n) if graded is None else graded
    return "".join("." if i not in graded else "1" if i in right else "0" for i in range(n))


def point(name, grades, ppl=2.0, looks=None, **kw) -> Point:
    n = grades.count("1") + grades.count("0")
    return Point(name, ppl, grades.count("1") / n, n, grades=grades, looks=looks, **kw)


def first(n_rows: int, k: int) -> set[int]:
    """The first ``k`` rows of the shared order."""
    return set(row_order(range(n_rows))[:k])


# -- the schedule and the looks' z ------------------------------------------------------
def test_schedule_doubles_to_the_cap_and_a_small_split_is_one_look():
    assert schedule(400) == [32, 64, 128, 256, 400]
    assert schedule(1319) == [32, 64, 128, 256, 512, 1024, 1319]
    assert schedule(20) == [20] and schedule(32) == [32]
    assert next_look(0, 400) == 32 and next_look(32, 400) == 64 and next_look(300, 400) == 400
    assert next_look(40, 400) == 64  # rows graded earlier off the schedule: the next look above them


def test_row_order_is_fixed_and_a_subset_keeps_it():
    order = row_order(range(500))
    assert sorted(order) == list(range(500)) and order != list(range(500))
    assert row_order(range(500)) == order
    assert row_order(range(100)) == [i for i in order if i < 100]  # --limit 100 shares the order's prefix


def test_looks_split_the_fixed_tests_error():
    assert interim_z(2.0) == pytest.approx(3.686, abs=1e-3)
    assert final_z(2.0, 1) == pytest.approx(2.0)  # a single look is the fixed-n test
    zs = [final_z(2.0, k) for k in range(1, 8)]
    assert zs == sorted(zs) and zs[-1] == pytest.approx(2.013, abs=1e-3)  # the end keeps nearly all of alpha
    for looks in range(1, 12):  # the union bound: every look's error together is at most the fixed test's
        spent = (looks - 1) * alpha(interim_z(2.0)) + alpha(final_z(2.0, looks))
        assert spent <= alpha(2.0) * (1 + 1e-9)


# -- the paired test and the margin ------------------------------------------------------
def test_paired_test_is_tighter_than_independent_samples():
    n = 400
    best = point("best", grades_of(set(range(360)), n))  # 90%
    other = point("p", grades_of(set(range(348)), n))  # 87%: wrong on every row the best is, and 12 more
    gap = gap_to_best(other, best, T)
    assert gap.paired == n and gap.se < 0.01
    assert not point_is_high(other, best, T)
    unpaired = Point("p", 2.0, other.acc, n)
    assert point_is_high(unpaired, Point("best", 2.0, best.acc, n), T)  # two binomials: within 2 SE


def test_a_verdict_below_the_best_shows_what_the_paired_test_saw():
    n = 400
    best = point("best", grades_of(set(range(360)), n))  # 90%
    low = point("low", grades_of(set(range(320)), n))  # 80%: 40 rows one way, none the other
    verdict = classify([low, best], T).of("low")  # before the peak: black
    assert verdict.phase is Phase.BLACK
    # Agresti-Min: 40 of 402 rows; its standard error 1.51 points, at z 2
    assert "below the best (best; paired on 400 rows: 10.0 points ± 3.0)" in verdict.reason
    unpaired = classify([Point("low", 2.0, 0.8, n), Point("best", 2.0, 0.9, n)], T).of("low")
    assert unpaired.phase is Phase.BLACK and unpaired.reason.startswith("accuracy 10.0 points below the best (best)")


def test_margin_makes_a_proven_small_gap_high():
    n = 1319
    best = point("best", grades_of(set(range(1250)), n))
    other = point("p", grades_of(set(range(1237)), n))  # 1 point below, proven (13 one-way disagreements)
    assert gap_to_best(other, best, T).below()
    assert point_is_high(other, best, T)
    assert not point_is_high(other, best, Thresholds(acc_margin=0.0))


def test_an_interim_look_judges_at_its_own_z():
    n = 400
    best = point("best", grades_of(set(range(380)), n))
    seen = first(n, 128)
    wrong = set(sorted(seen & set(range(380)))[:8])  # rows the best has right
    mine = grades_of(set(range(380)) - wrong, n, graded=seen)
    g = gap_to_best(point("p", mine, looks=3), best, T)
    assert 2.0 < g.gap / g.se < interim_z(2.0)  # beyond 2 SE, short of the look's z
    assert point_is_high(point("p", mine, looks=3), best, T)
    assert not point_is_high(point("p", mine), best, T)  # the same rows as a fixed-n evaluation


def test_records_carry_grades_checked_against_their_value():
    ok = Metric("ep1", "val", "acc", 0.5, "mean", 2, 1.0, grades="10.-", looks=1)
    assert Metric.from_json(json.loads(json.dumps(ok.to_json()))) == ok
    for bad in ({"grades": "11.-"}, {"grades": "1x"}, {"grades": 5}, {"looks": 0}, {"looks": 1000}):
        with pytest.raises(RecordError):
            Metric.from_json({**ok.to_json(), **bad})
    assert extends("110.", "1...") and not extends("010.", "1...") and not extends("11", "1..")


# -- the stopping rule on hand-made cases ------------------------------------------------
def trajectory(n: int, accs: list[float], ppls: list[float], graded: dict[str, int], agree: bool = True):
    """Points ep0.. with accuracy on the first rows of the order graded so far."""
    order = row_order(range(n))
    points = []
    for i, (acc, ppl) in enumerate(zip(accs, ppls)):
        name = f"ep{i}"
        k = graded.get(name, 0)
        if not k:
            points.append(Point(name, ppl, None, base=i == 0))
            continue
        # rows right: spread evenly over the order, the same rows for every checkpoint (agree: a
        # less accurate one is wrong where the others are, and more), or other rows for odd and
        # even checkpoints (disagree)
        shift = 0 if agree else (i % 2) * 50
        right = {order[j] for j in range(n) if (j * 37 + shift) % 100 < acc * 100}
        points.append(point(name, grades_of(right, n, graded=set(order[:k])), ppl=ppl, looks=1, base=i == 0))
    return points


def run_plan(n, accs, ppls, agree=True):
    graded: dict[str, int] = {}
    rounds = 0
    while True:
        points = trajectory(n, accs, ppls, graded, agree)
        todo = plan(points, graded, n, T)
        if not todo:
            return graded, points
        graded.update(todo)
        rounds += 1
        assert rounds < 20


def test_a_checkpoint_far_below_stops_after_one_look():
    n = 400
    graded, points = run_plan(n, [0.0, 0.95, 0.96, 0.95, 0.95], [3.0, 1.2, 1.25, 1.8, 2.0])
    assert graded["ep0"] == 32  # 0 of 32 against 95%: clearly below at the first look
    assert classify(points, T).of("ep0").phase is Phase.BLACK


def test_the_base_goes_to_the_cap_while_the_run_may_not_have_learned():
    n = 400
    # the best is 4 points above the base: not clearly above it, so "learned" is still open
    graded, points = run_plan(n, [0.52, 0.56, 0.56, 0.56, 0.56], [3.0, 1.2, 1.25, 2.0, 2.1])
    assert graded["ep0"] == n
    assert not classify(points, T).learned


def test_two_equal_checkpoints_that_disagree_need_every_row():
    n = 400
    # ep3 and ep4 at 60% like the best, but right on other rows: no look shows them within 2 points
    graded, points = run_plan(n, [0.0, 0.6, 0.6, 0.6, 0.6], [3.0, 1.2, 1.25, 2.0, 2.1], agree=False)
    assert graded["ep4"] == n and graded["ep0"] == 32


def test_band_members_go_to_the_cap_and_the_same_checkpoint_outside_stops():
    n = 400
    accs = [0.0, 0.97, 0.97, 0.97, 0.97, 0.97]
    inside, _ = run_plan(n, accs, [3.0, 1.5, 1.2, 1.21, 1.22, 2.5])  # ep4 inside the band (1.25x log-ppl)
    outside, _ = run_plan(n, accs, [3.0, 1.5, 1.2, 1.21, 2.4, 2.5])
    assert inside["ep4"] == n
    assert outside["ep4"] == outside["ep5"] == 128  # right where the best is: within the margin at 128 rows


# -- eval --adaptive on a real run -----------------------------------------------------------
@pytest.fixture(scope="module")
def full_source(tmp_path_factory) -> Path:
    """The demo's full finetuning of the tiny model, 3 epochs, 96 rows per eval split."""
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import train

    out = tmp_path_factory.mktemp("adaptive") / "run"
    train(build_config(model="tiny", data=DataOptions("synthetic-math", train_size=200, eval_size=96), out=str(out),
                       method="full", seed=0, lr=3e-4, epochs=3, batch_size=8, micro_batch_size=8, max_len=256,
                       schedule="linear", warmup_steps=0))
    return out


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def evaluate(run: Path, batch_size: int = 48, **kw):
    from overmem.evaluation.options import EvalOptions
    from overmem.evaluation.runner import Evaluator

    ev = Evaluator(run, EvalOptions(backend="hf", max_new_tokens=64, batch_size=batch_size, splits=("val",), **kw))
    try:
        ev.evaluate_pending()
    finally:
        ev.close()
    return ev


def acc_records(run: Path) -> dict[str, dict]:
    latest = {}
    for r in read_jsonl(run / "metrics.jsonl"):
        if r.get("metric") == "acc" and r.get("split") == "val":
            latest[r["checkpoint"]] = r
    return latest


def sidecar_rows(run: Path, name: str) -> list[int]:
    path = run / "samples" / name / "val.gen.jsonl"
    return [r["idx"] for r in read_jsonl(path)] if path.exists() else []


def test_adaptive_keeps_the_phases_and_generates_each_row_once(full_source, tmp_path):
    from overmem.rundir import load_run
    from overmem.summary import summarize

    full = evaluate(copy(full_source, tmp_path / "full"))
    adaptive = evaluate(copy(full_source, tmp_path / "adaptive"), adaptive=True)
    assert full.generated_rows == 4 * 96
    records = acc_records(tmp_path / "adaptive")
    assert records["ep0"]["n"] == 32 and records["ep0"]["value"] == 0.0  # the base: below after one look
    assert adaptive.generated_rows == sum(r["n"] for r in records.values()) < full.generated_rows
    for name, record in records.items():
        rows = sidecar_rows(tmp_path / "adaptive", name)
        assert len(rows) == len(set(rows)) == record["n"] and len(record["grades"]) == 96
        assert set(rows) == set(row_order(range(96))[: record["n"]])  # the first rows of the shared order
    phases = {s: {v.name: v.phase for v in summarize(load_run(tmp_path / s), "val").advice.phases.verdicts}
              for s in ("full", "adaptive")}
    assert phases["full"] == phases["adaptive"]
    assert summarize(load_run(tmp_path / "adaptive"), "val").run.problems == ()  # later looks are no conflict
    again = evaluate(tmp_path / "adaptive", adaptive=True)
    assert again.generated_rows == 0 and acc_records(tmp_path / "adaptive") == records
    reused = evaluate(tmp_path / "full", adaptive=True)  # an earlier full evaluation: nothing generated again
    assert reused.generated_rows == 0


def test_limit_caps_and_a_split_smaller_than_a_look(full_source, tmp_path):
    run = copy(full_source, tmp_path / "run")
    evaluate(run, adaptive=True, limit=20)
    records = acc_records(run)
    # the cap is a count of rows in the shared order; grades cover the whole split
    assert {r["n"] for r in records.values()} == {20} and all(len(r["grades"]) == 96 for r in records.values())
    assert set(sidecar_rows(run, "ep1")) == set(row_order(range(96))[:20])
    evaluate(run, adaptive=True, limit=70)  # a larger cap later: the rows graded so far count
    later = acc_records(run)
    assert later["ep0"]["n"] == 20  # 0 of 20 is already clearly below: nothing more to generate
    assert max(r["n"] for r in later.values()) == 70
    evaluate(run, adaptive=True, limit=10)  # a smaller cap: what is there stands, nothing is dropped
    assert acc_records(run) == later
    assert all(len(sidecar_rows(run, name)) == len(set(sidecar_rows(run, name))) for name in records)


def test_metrics_ppl_has_nothing_to_adapt(full_source, tmp_path):
    run = copy(full_source, tmp_path / "run")
    result = run_cli("eval", run, "--adaptive", "--metrics", "ppl", "--splits", "val", "--backend", "hf")
    assert result.returncode == 0, result.stderr
    assert "nothing to adapt" in result.stdout + result.stderr
    assert not acc_records(run)


def test_kill_mid_look_resumes_each_row_once(full_source, tmp_path):
    run = copy(full_source, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "overmem_tui.cli", "eval", str(run), "--adaptive", "--splits",
                             "val", "--backend", "hf", "--max-new-tokens", "64", "--batch-size", "8"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if sum(len(sidecar_rows(run, f"ep{i}")) for i in range(4)) >= 40:  # past the first look of one
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {f"ep{i}": sidecar_rows(run, f"ep{i}") for i in range(4)}
    assert sum(map(len, before.values())) >= 32
    ev = evaluate(run, adaptive=True, batch_size=8)
    after = {name: sidecar_rows(run, name) for name in before}
    assert sum(map(len, after.values())) == sum(map(len, before.values())) + ev.generated_rows
    records = acc_records(run)
    for name, rows in after.items():
        assert len(rows) == len(set(rows)) == records[name]["n"]
        assert set(before[name]) <= set(rows)


def test_hostile_sidecars_and_records_are_notes_not_tracebacks(full_source, tmp_path):
    run = copy(full_source, tmp_path / "run")
    evaluate(run, adaptive=True, limit=20)
    sidecar = run / "samples" / "ep1" / "val.gen.jsonl"
    sidecar.write_text("[1, 2]\n")  # JSON, not a row
    nested = run / "samples" / "ep2" / "val.gen.jsonl"
    rows = read_jsonl(nested)
    rows[0]["generation"] = [[[]]]  # not a string
    nested.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with (run / "metrics.jsonl").open("a") as fh:  # a planted record at the last look there is
        record = dict(acc_records(run)["ep3"], looks=64)
        fh.write(json.dumps(record) + "\n")
    notes = []
    from overmem.evaluation.options import EvalOptions
    from overmem.evaluation.runner import Evaluator
    from overmem.progress import Note

    ev = Evaluator(run, EvalOptions(backend="hf", max_new_tokens=64, batch_size=48, splits=("val",), adaptive=True,
                                    limit=40), on_event=lambda e: notes.append(e.text) if isinstance(e, Note) else None)
    try:
        ev.evaluate_pending()
    finally:
        ev.close()
    assert sum("does not hold this split's rows" in t for t in notes) == 2
    records = acc_records(run)
    assert records["ep3"]["looks"] <= 64  # never a record the reader would refuse
    from overmem.rundir import load_run

    assert not [p for p in load_run(run).problems if "looks" in p]


def test_the_table_shows_n_where_the_rows_differ(paper_run):
    from overmem.rundir import RunDir, load_run
    from overmem.summary import summarize, summary_json
    from overmem.table import table_model

    before = table_model(summarize(load_run(paper_run), "val"))
    assert "val-n" not in [c.key for c in before.columns]  # every accuracy over 1,319 rows: no column
    grades = "1" * 150 + "0" * 10 + "." * 1159
    RunDir(paper_run).append([Metric("ep3", "val", "acc", 150 / 160, "mean", 160, 1700000200.0, grades=grades,
                                     looks=3)])
    summary = summarize(load_run(paper_run), "val")
    model = table_model(summary)
    keys = [c.key for c in model.columns]
    assert "val-n" in keys
    cells = {r.name: r.cells[keys.index("val-n")] for r in model.rows}
    assert cells["ep3"] == "160" and cells["ep5"] == "1319"
    ep3 = next(c for c in summary_json(summary)["checkpoints"] if c["name"] == "ep3")
    assert ep3["metrics"]["val"]["n"] == 160 and ep3["metrics"]["val"]["looks"] == 3
