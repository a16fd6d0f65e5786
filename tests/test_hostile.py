"""Issue 20: nothing a file or a flag can make overmem do harm.

Each test is one case of the issue, as a hostile user (or a careless program) would
try it: untrusted run.json and checkpoint.json, tampered safetensors, bad records,
outputs that would replace a run, two trainers, bad flags and data. The expected
behaviour is one clean line (exit 2 bad input, 3 corrupt run, 1 failed job) or the
right result, never a traceback, "unexpected", a write outside the run or a lost run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overmem.phases import Phase, Point
from overmem.advice import advise
from overmem.rundir import RunDir, load_run
from tests.helpers import ROOT, read_jsonl, run_cli

B, Y, P = Phase.BLACK, Phase.YELLOW, Phase.PURPLE


def _one_line_error(result, code: int | None = None) -> str:
    """The single stderr line of a failed command (and no traceback, no "unexpected")."""
    err = result.stderr.strip()
    assert result.returncode != 0, result.stdout[-2000:]
    if code is not None:
        assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("overmem: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------
# shared fixtures: one real 3-epoch run (R of the issue), copied per test
# ---------------------------------------------------------------------------------

def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "overmem_tui.cli", "train", "--model", "tiny", "--data", "synthetic-math",
            "--out", str(out), "--method", "lora", "--rank", "4", "--alpha", "8", "--epochs", "3",
            "--batch-size", "8", "--micro-batch-size", "8", "--lr", "3e-3", "--train-size", "16",
            "--eval-size", "4", "--max-len", "128", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "R"
    done = subprocess.run(_train_cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of R (inside its own parent folder, so escapes land in tmp_path)."""
    dst = tmp_path / "runs" / "R"
    shutil.copytree(trained, dst)
    return dst


def _ckpt_json(run: Path, name: str) -> Path:
    return run / "checkpoints" / name / "checkpoint.json"


def _edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


# ---------------------------------------------------------------------------------
# 9-11b: silently wrong decisions
# ---------------------------------------------------------------------------------

def _metric(ckpt: str, split: str, metric: str, value, n=100, **extra) -> str:
    obj = {"type": "metric", "checkpoint": ckpt, "split": split, "metric": metric, "aggregate": "mean",
           "value": value, "n": n, "time": 1.0, **extra}
    return json.dumps(obj)


def _records_run(tmp_path: Path, lines: list[str], epochs: int) -> Path:
    from overmem.rundir import CheckpointInfo, RunInfo

    rd = RunDir(tmp_path / "records")
    rd.create(RunInfo(status="finished", base_model={"id": "tiny", "path": None}))
    for i in range(1, epochs + 1):
        with rd.stage_checkpoint(CheckpointInfo(f"ep{i}", "adapter", epoch=float(i), step=i)):
            pass
    rd.metrics.write_text("".join(line + "\n" for line in lines))
    return rd.path


def _ppl_acc(ppl: list[float], acc: list[float], n: int = 100) -> list[str]:
    out = []
    for i, (p, a) in enumerate(zip(ppl, acc)):
        out += [_metric(f"ep{i}", "val", "ppl", p, n), _metric(f"ep{i}", "val", "acc", a, n)]
    return out


@pytest.mark.parametrize("bad,problem", [
    (float("nan"), "ppl nan is not finite"),
    (float("inf"), "ppl inf is not finite"),
    ("1e400", "ppl inf is not finite"),
    (-3.0, "ppl -3.0 is below 1"),
    (0.5, "ppl 0.5 is below 1"),
])
def test_9_invalid_ppl_is_refused_named_and_never_ranked(tmp_path, bad, problem):
    ppl = [9.0, 3.0, 2.8, 2.9, 3.0]
    lines = _ppl_acc(ppl, [0.0, 0.7, 0.8, 0.8, 0.8])
    bad_line = _metric("ep4", "val", "ppl", 0.0)
    bad_line = bad_line.replace('"value": 0.0', f'"value": {bad}' if isinstance(bad, str) else
                                f'"value": {json.dumps(bad)}')
    lines[8] = bad_line  # ep4's ppl
    path = _records_run(tmp_path, lines, 4)
    from overmem.summary import summarize

    summary = summarize(load_run(path))
    assert any(f"metrics.jsonl:9: checkpoint ep4, split val: {problem}" in p for p in summary.run.problems)
    verdict = summary.advice.phases.of("ep4")
    assert verdict.log_ratio is None and verdict.phase is not P  # never ranked: no ppl at all
    assert summary.advice.phases.onset is None
    result = run_cli("recommend", path, "--json")
    assert result.returncode == 3 and problem in _one_line_error(result, 3)
    obj = json.loads(result.stdout)
    assert any(problem in p for p in obj["problems"])


@pytest.mark.parametrize("acc,problem", [(2.0, "acc 2.0 is not an accuracy in [0, 1]"),
                                         (-0.1, "acc -0.1 is not an accuracy in [0, 1]")])
def test_9_invalid_accuracy_is_refused(tmp_path, acc, problem):
    lines = _ppl_acc([9.0, 3.0, 2.8], [0.0, 0.7, 0.8])
    lines[3] = _metric("ep1", "val", "acc", acc)
    run = load_run(_records_run(tmp_path, lines, 2))
    assert any(problem in p and "checkpoint ep1, split val" in p for p in run.problems)
    assert [m.value for m in run.metrics if m.checkpoint == "ep1" and m.metric == "acc"] == []


def test_9_percent_trainer_accuracy_above_100_is_refused(tmp_path):
    from overmem.rundir.hf_trainer import read_trainer_folder

    out = tmp_path / "trainer"
    (out / "checkpoint-1").mkdir(parents=True)
    state = {"global_step": 2, "max_steps": 2, "log_history": [
        {"step": 1, "epoch": 1.0, "eval_loss": 1.0, "eval_accuracy": 80.0},
        {"step": 2, "epoch": 2.0, "eval_loss": float("nan"), "eval_accuracy": 250.0}]}
    (out / "trainer_state.json").write_text(json.dumps(state))
    parsed = read_trainer_folder(out)
    values = {(m.checkpoint, m.metric): m.value for m in parsed.metrics}
    assert values[("checkpoint-1", "trainer/accuracy")] == pytest.approx(0.8)
    assert ("checkpoint-2", "trainer/accuracy") not in values and ("checkpoint-2", "ppl") not in values
    text = "\n".join(parsed.problems)
    assert "step 2, split val: accuracy 2.5 is not an accuracy in [0, 1]" in text
    assert "step 2, split val: eval loss gives ppl nan" in text


def test_10_a_key_recorded_twice_with_another_value_is_a_problem_and_the_rule_is_stated(tmp_path):
    lines = _ppl_acc([9.0, 3.0, 2.8], [0.0, 0.7, 0.8])
    lines.append(_metric("ep1", "val", "acc", 0.9))  # the same key, another value
    lines.append(_metric("ep2", "val", "acc", 0.8))  # the same value again: nothing to say
    lines.append(_metric("ep2", "val", "ppl", 2.7, replaces=True))  # a deliberate re-evaluation
    run = load_run(_records_run(tmp_path, lines, 2))
    assert run.problems == ("metrics.jsonl:7: ep1 val acc (mean) = 0.9 was already recorded as 0.7 on line 4; "
                            "the later record counts",)
    from overmem.summary import summarize

    rows = {r.name: r.get("val") for r in summarize(run).rows}
    assert rows["ep1"].acc == 0.9 and rows["ep2"].ppl == 2.7


def test_11_accuracy_that_never_rose_above_the_base_is_black_everywhere():
    # 0-1% on 400 rows while ppl falls: nothing was learned
    ppl = [9.0, 5.0, 3.0, 2.5, 2.4, 2.6, 3.5]
    acc = [0.0, 0.0, 0.005, 0.01, 0.0075, 0.01, 0.005]
    points = [Point(f"ep{i}", p, a, 400, base=i == 0) for i, (p, a) in enumerate(zip(ppl, acc))]
    advice = advise(points, "val")
    assert [v.phase for v in advice.phases.verdicts] == [B] * 7
    assert not advice.phases.learned
    assert advice.recommended is None and advice.merge is None
    assert "never rose clearly above the base's 0.0%" in advice.reasons[0]
    assert "never rose" in advice.warnings[0]
    # without a base the floor is zero; a real rise (60% over 0%) is learned
    no_base = [Point(f"ep{i}", p, a, 400) for i, (p, a) in enumerate(zip(ppl[1:], acc[1:]))]
    assert not advise(no_base, "val").phases.learned
    rose = [Point("ep0", 9.0, 0.0, 400, base=True)] + [Point(f"ep{i}", p, 0.6, 400)
                                                       for i, p in enumerate(ppl[1:], 1)]
    assert advise(rose, "val").phases.learned
    # a strong base that finetuning did not improve: accuracy never rose above it
    flat = [Point("ep0", 3.0, 0.76, 1319, base=True), Point("ep1", 2.5, 0.77, 1319), Point("ep2", 4.0, 0.76, 1319)]
    assert [v.phase for v in advise(flat, "val").phases.verdicts] == [B, B, B]


# demo --sweep, lr 6e-4, seed 0 as the issue reported it: validation accuracy keeps rising
# into the purple window (91-96% at ep1-ep11, 98-100% from ep13) while the ppl minimum sits
# at ep3 (these val ppl are the ones this machine's run measured)
SWEEP_PPL = [3.3718, 1.1638, 1.1077, 1.1076, 1.1106, 1.1134, 1.1122, 1.1084, 1.1248, 1.1456, 1.1259, 1.1465,
             1.1582, 1.1716, 1.1967, 1.2121, 1.2354, 1.2409, 1.248, 1.2709, 1.2897, 1.2902, 1.3044, 1.3157, 1.3237,
             1.3295, 1.3335, 1.3383, 1.3422, 1.3446, 1.3452]
SWEEP_ACC = [0.0, 0.91, 0.96, 0.93, 0.92, 0.93, 0.93, 0.95, 0.94, 0.91, 0.96, 0.96, 0.97] + \
    [0.98, 0.99, 1.0, 1.0, 1.0, 0.99, 0.98, 0.99, 1.0, 1.0, 0.99, 0.98, 0.98, 0.99, 1.0, 1.0, 0.99, 0.98]


def _sweep_points(merge: tuple[float, float] | None = None) -> list[Point]:
    points = [Point(f"ep{i}", p, a, 100, base=i == 0, mergeable=i > 0)
              for i, (p, a) in enumerate(zip(SWEEP_PPL, SWEEP_ACC))]
    if merge:
        points.append(Point("merge-ep12+ep30", merge[0], merge[1], 100, on_trajectory=False,
                            parents=("ep12", "ep30")))
    return points


def test_11b_no_healthy_checkpoint_in_the_band_the_advice_follows_the_phases():
    advice = advise(_sweep_points(), "val")
    phase = {v.name: v.phase for v in advice.phases.verdicts}
    assert all(phase[f"ep{i}"] is B for i in range(12))
    assert phase["ep12"] is Y and all(phase[f"ep{i}"] is P for i in range(13, 31))
    # never an under-trained checkpoint presented as healthy: the least memorized yellow one
    assert advice.recommended == "ep12" and phase[advice.recommended] is Y
    text = "\n".join(advice.reasons)
    assert "no checkpoint among the 8 checkpoints whose val ppl is within 1.25x" in text
    assert "the most accurate of them, ep2, has 96.0%, n=100, 4.0 points below the best" in text
    assert "ep12: the least over-memorized checkpoint with high val accuracy (97.0%, n=100): log-ppl 1.44x" in text
    assert "the trade-off: ep2 keeps log-ppl at 1.00x but costs 4.0 points of accuracy; ep12 is 3.0 points " \
           "below the best at log-ppl 1.44x" in text
    # the merge suggestion includes the recommended checkpoint
    assert advice.merge == ("ep12", "ep30")


def test_11b_a_merge_that_is_itself_purple_is_not_offered():
    # merge-ep12+ep30 evaluated: val log-ppl 1.98x its minimum
    ppl = math.exp(1.98 * math.log(min(SWEEP_PPL)))
    advice = advise(_sweep_points((ppl, 0.99)), "val")
    assert advice.phases.of("merge-ep12+ep30").phase is P
    assert advice.recommended == "ep12" and advice.merge is None
    assert "merge-ep12+ep30 was evaluated and is itself over-memorized (log-ppl 1.98x its minimum)" in \
        "\n".join(advice.reasons)


def test_11b_no_yellow_at_all_recommends_nothing_and_names_the_trade_off():
    points = [Point("ep0", 9.0, 0.0, 100, base=True), Point("ep1", 2.0, 0.80, 100), Point("ep2", 2.05, 0.82, 100),
              Point("ep3", 3.5, 0.97, 100), Point("ep4", 4.0, 0.98, 100)]
    advice = advise(points, "val")
    assert [v.phase for v in advice.phases.verdicts] == [B, B, B, P, P]
    assert advice.recommended is None and advice.merge is None
    assert "no checkpoint is healthy, so none is recommended; the trade-off: ep2 costs" in "\n".join(advice.reasons)


# ---------------------------------------------------------------------------------
# 1-3: security
# ---------------------------------------------------------------------------------

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def _evil_base(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny base whose config.json maps its classes to code in the folder."""
    from overmem.models.tiny import TINY_DIR

    folder = tmp_path / "evil-base"
    shutil.copytree(TINY_DIR, folder)
    marker = tmp_path / "evil-ran"
    (folder / "evilcode.py").write_text(EVIL.format(marker=str(marker)))
    _edit_json(folder / "config.json", auto_map={"AutoConfig": "evilcode.Config",
                                                 "AutoModelForCausalLM": "evilcode.Model",
                                                 "AutoTokenizer": ["evilcode.Tok", None]})
    return folder, marker


@pytest.mark.parametrize("command", [["eval", "{run}", "--backend", "hf", "--max-new-tokens", "4"],
                                     ["probe", "{run}", "--checkpoints", "ep1", "--probes", "robustness"],
                                     ["train", "--out", "{run}", "--resume"]])
def test_1_a_run_that_recorded_remote_code_never_runs_it_without_the_flag(run, tmp_path, command):
    folder, marker = _evil_base(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["base_model"].update(path=str(folder), id=str(folder), trust_remote_code=True)
    (run / "run.json").write_text(json.dumps(info))
    result = run_cli(*[part.format(run=run) for part in command])
    line = _one_line_error(result, 2)
    assert "--trust-remote-code" in line and "runs its own code" in line
    assert not marker.exists()
    assert "--trust-remote-code" in run_cli(command[0], "--help").stdout


def test_1_the_flag_is_the_invocations_not_the_runs():
    from overmem.errors import UsageError
    from overmem.models.loading import allow_remote_code

    recorded = {"id": "x", "path": "/x", "trust_remote_code": True}
    with pytest.raises(UsageError, match="--trust-remote-code"):
        allow_remote_code(recorded, False)
    assert allow_remote_code(recorded, True)["trust_remote_code"] is True
    assert allow_remote_code({"id": "x", "trust_remote_code": False}, False)["trust_remote_code"] is False


def test_2_a_checkpoint_name_from_a_file_never_becomes_a_path(run, tmp_path):
    victim = run.parent / "victim.json"
    victim.write_text('{"mine": true}')
    hour_ago = time.time() - 3600
    os.utime(victim, (hour_ago, hour_ago))
    _edit_json(_ckpt_json(run, "ep1"), name="../../ESCAPE")
    _edit_json(_ckpt_json(run, "ep2"), name="../../victim")
    result = run_cli("eval", run, "--backend", "hf", "--max-new-tokens", "4", "--metrics", "ppl")
    line = _one_line_error(result, 3)
    assert "checkpoints/ep1: checkpoint name '../../ESCAPE' holds a path separator" in line + result.stdout
    assert not (tmp_path / "ESCAPE").exists() and not (run.parent.parent / "ESCAPE").exists()
    assert victim.read_text() == '{"mine": true}'
    names = {m.checkpoint for m in load_run(run).metrics if m.metric == "ppl"}
    assert names == {"ep0", "ep3"}  # the others evaluated, the crafted ones not read at all


def test_2_names_and_links_inside_a_run_are_checked_before_writing(run, tmp_path):
    from overmem.errors import UsageError

    rd = RunDir(run)
    for bad in ("..", "../x", ".hidden", "a/b", ""):
        with pytest.raises(UsageError):
            rd.checkpoint(bad)
        with pytest.raises(UsageError):
            rd.sidecar("ep1", bad, "ppl")
        with pytest.raises(UsageError):
            rd.claim_path(bad)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "samples").mkdir(exist_ok=True)
    os.symlink(elsewhere, run / "samples" / "ep1")
    with pytest.raises(UsageError, match="lies outside"):
        rd.write_sidecar("ep1", "val", "ppl", [{"idx": 0}])
    assert list(elsewhere.iterdir()) == []
    # selection.json naming a path is not a selection
    (run / "selection.json").write_text(json.dumps({"checkpoint": "../../x"}))
    assert load_run(run).selected is None


@pytest.mark.parametrize("args", [["select", "{run}", "../ep1"],
                                  ["eval", "{run}", "--split-file", "../x={run}/run.json"],
                                  ["eval", "{run}", "--checkpoints", "../../x"],
                                  ["merge", "ep1", "../../x", "--run", "{run}"]])
def test_3_names_on_the_command_line_are_one_component(run, args):
    result = run_cli(*[a.format(run=run) for a in args])
    _one_line_error(result, 2)
    assert not (run.parent.parent / "x").exists()


# ---------------------------------------------------------------------------------
# 4-5: no output replaces a run
# ---------------------------------------------------------------------------------

def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args,why", [
    (["merge", "ep1", "ep2", "--run", "{run}", "--out", "{run}", "--force"], "is an overmem run"),
    (["merge", "ep1", "ep2", "--run", "{run}", "--out", "{run}/checkpoints/ep3", "--force"], "lies inside checkpoints"),
    (["merge", "ep1", "ep2", "--run", "{run}", "--out", "{run}/state", "--force"], "lies inside state"),
    (["merge", "ep1", "ep2", "--run", "{run}", "--out", "{other}", "--force"], "is an overmem run"),
    (["select", "{run}", "ep2", "--export", "{run}", "--force"], "is an overmem run"),
    (["select", "{run}", "ep2", "--export", "{run}/checkpoints", "--force"], "lies inside checkpoints"),
    (["merge", "ep1", "ep2", "--run", "{run}", "--out", "{run}/checkpoints/mymerge"], "lies inside checkpoints"),
])
def test_4_5_no_output_is_or_lies_inside_a_run(run, tmp_path, args, why):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    before, before_other = _tree(run), _tree(other)
    result = run_cli(*[a.format(run=run, other=other) for a in args])
    assert why in _one_line_error(result, 2)
    assert _tree(run) == before and _tree(other) == before_other
    assert run_cli("recommend", run).returncode == 3  # still readable: no metrics yet, nothing broken
    assert not (run / "checkpoints" / "mymerge").exists()


def test_4_force_replaces_only_what_overmem_wrote(run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    result = run_cli("merge", "ep1", "ep2", "--run", run, "--out", mine, "--force")
    assert "--force replaces only what overmem wrote there before" in _one_line_error(result, 2)
    assert (mine / "notes.txt").read_text() == "precious"
    out = tmp_path / "merged"
    assert run_cli("merge", "ep1", "ep2", "--run", run, "--out", out).returncode == 0
    again = run_cli("merge", "ep1", "ep2", "--run", run, "--out", out, "--force")
    assert again.returncode == 0, again.stderr  # a previous merge of overmem's is replaced
    assert (out / "adapter_model.safetensors").is_file()
    exported = tmp_path / "export"
    assert run_cli("select", run, "ep2", "--export", exported).returncode == 0
    assert run_cli("select", run, "ep3", "--export", exported, "--force").returncode == 0
    assert (exported / "checkpoint.json").is_file() and json.loads((exported / "checkpoint.json").read_text())[
        "name"] == "ep3"


# ---------------------------------------------------------------------------------
# 6-8: tampered safetensors
# ---------------------------------------------------------------------------------

def _rewrite_header(path: Path, mutate) -> None:
    import struct

    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    header = mutate(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])


def _tensors(header: dict) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _at_zero(h):
    for k in _tensors(h):
        begin, end = h[k]["data_offsets"]
        h[k]["data_offsets"] = [0, end - begin]
    return h


def _first(field, value):
    def mutate(h):
        name = _tensors(h)[0]
        if value is None:
            del h[name][field]
        else:
            h[name][field] = value
        return h
    return mutate


def _f16(h):
    h[_tensors(h)[0]]["dtype"] = "F16"
    return h


MUTATIONS = {
    "overlapping": (_at_zero, "overlaps the tensor before it"),
    "unknown dtype": (_first("dtype", "X99"), "has an unknown dtype 'X99'"),
    "F16 for F32": (_f16, "is F16"),
    "reversed offsets": (_first("data_offsets", [100, 10]), "not [begin, end] with begin <= end"),
    "a list": (lambda h: [h], "the header is not a JSON object"),
    "no dtype": (_first("dtype", None), "has an unknown dtype None"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_6_7_a_tampered_header_is_one_line_naming_file_and_tensor(run, case):
    mutate, expected = MUTATIONS[case]
    file = run / "checkpoints" / "ep1" / "adapter_model.safetensors"
    _rewrite_header(file, mutate)
    result = run_cli("merge", "ep1", "ep3", "--run", run)
    line = _one_line_error(result, 3)
    assert str(file) in line and expected in line
    assert not (run / "checkpoints" / "merge-ep1+ep3").exists()


def test_8_eval_names_the_corrupt_file_and_goes_on_with_the_others(run):
    file = run / "checkpoints" / "ep1" / "adapter_model.safetensors"
    _rewrite_header(file, _at_zero)
    result = run_cli("eval", run, "--backend", "hf", "--max-new-tokens", "4", "--limit", "2")
    line = _one_line_error(result, 3)
    assert "1 checkpoint(s) could not be evaluated: ep1" in line and str(file) in line
    assert "ep1 failed:" in result.stdout + result.stderr
    done = {m.checkpoint for m in load_run(run).metrics if m.metric == "acc"}
    assert done == {"ep0", "ep2", "ep3"}


# ---------------------------------------------------------------------------------
# 12-14: one trainer, dead writers, resume state
# ---------------------------------------------------------------------------------

def test_12_a_second_trainer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "R2"
    first = subprocess.Popen(_train_cmd(out)[:-4] + ["--epochs", "200"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not ((out / "training.json").exists() and (out / "checkpoints" / "ep1").exists()):
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.1)
        for extra in (["--resume"], []):
            cmd = ["train", "--out", out, *extra] if extra else _train_cmd(out)[3:]
            result = run_cli(*cmd)
            line = _one_line_error(result, 2)
            if extra:
                assert f"is being trained by another process (pid {first.pid} on" in line
            else:
                assert "already holds a run" in line
        assert first.poll() is None  # the running trainer was not disturbed
    finally:
        first.kill()
        first.wait()
    logs = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("type") == "train"]
    assert len({r["step"] for r in logs}) == len(logs)  # nobody else wrote its steps


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.test_training import tiny_cfg
from overmem.training.trainer import train
def kill(step):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
train(tiny_cfg({out!r}, "lora", epochs=3, train_size=24, dropout=0.0, log_every=1), on_step=kill)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_13_resume_cleans_what_a_killed_writer_left_and_keeps_one_attempt(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER.format(root=str(ROOT), kill_at=5, out=str(out))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    dead = _dead_pid()
    staged = out / "checkpoints" / f".ep2.staging-{dead}"
    staged.mkdir()
    (staged / "adapter_model.safetensors").write_bytes(b"half")
    (out / ".state.staging-6").mkdir()
    live_merge = out / "checkpoints" / f".merge-x.staging-{os.getpid()}"  # a live process's: kept
    live_merge.mkdir()
    steps_before = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r.get("type") == "train"]
    assert steps_before == [1, 2, 3, 4, 5]
    result = run_cli("train", "--out", out, "--resume")
    assert result.returncode == 0, result.stderr
    notes = json.loads((out / "run.json").read_text())["notes"]
    assert f"removed .ep2.staging-{dead}" in " ".join(result.stderr.split()) or \
        any(f"removed .ep2.staging-{dead}" in n for n in notes)
    assert not staged.exists() and not (out / ".state.staging-6").exists() and live_merge.exists()
    run = load_run(out, strict=True)
    assert [log.step for log in run.train_logs] == list(range(1, 10))
    resumed_at = next(r["time"] for r in read_jsonl(out / "metrics.jsonl") if r.get("type") == "resume")
    assert all(log.time > resumed_at for log in run.train_logs if log.step > 3)  # the new attempt's records


def test_14_resume_state_is_checked_against_the_checkpoints(run):
    progress = run / "state" / "progress.json"
    _edit_json(progress, global_step=999)
    line = _one_line_error(run_cli("train", "--out", run, "--resume"), 3)
    assert "says step 999, but ep3 was saved at step 6" in line
    progress.write_text(json.dumps({"epoch": 3, "step_in_epoch": 0, "global_step": 6, "checkpoint": "ep3",
                                    "extra": 1}))
    assert "is not a resume position" in _one_line_error(run_cli("train", "--out", run, "--resume"), 3)
    assert load_run(run).status == "finished"  # refused before anything changed


def test_14_a_link_to_another_runs_checkpoint_is_not_read(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    os.symlink(other / "checkpoints" / "ep3", run / "checkpoints" / "ep4")
    os.symlink(other / "checkpoints" / "ep3", run / "checkpoints" / "ep3b")
    loaded = load_run(run)
    assert [c.name for c in loaded.checkpoints] == ["ep0", "ep1", "ep2", "ep3"]
    text = "\n".join(loaded.problems)
    assert "checkpoints/ep4: is a link to" in text and "outside this run" in text


# ---------------------------------------------------------------------------------
# 16-17: bad flags and data, refused before anything loads
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--weight-decay", "-5", "--dry-run"], "--weight-decay must be at least 0"),
    (["--max-grad-norm", "-1", "--dry-run"], "--max-grad-norm must be at least 0"),
    (["--train-size", "0", "--dry-run"], "--train-size must be at least 1"),
    (["--rank", "0", "--dry-run"], "--rank must be at least 1"),
    (["--dropout", "1.5", "--dry-run"], "--dropout must be below 1"),
])
def test_16_training_options_are_checked(tmp_path, extra, message):
    out = tmp_path / "never"
    cmd = _train_cmd(out)[3:]
    for flag in extra[::2]:
        if flag in cmd:
            at = cmd.index(flag)
            del cmd[at:at + 2]
    assert message in _one_line_error(run_cli(*cmd, *extra), 2)
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--device", "cuda:0"], "--device cuda:0: this process sees 0 CUDA GPU(s)"),
    (["--claim-timeout", "-1"], "--claim-timeout must be above 0"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must be at most 1"),
])
def test_16_eval_options_are_checked_before_loading(run, extra, message):
    if extra[0] == "--device":
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    before = _tree(run)
    assert message in _one_line_error(run_cli("eval", run, *extra), 2)
    assert _tree(run) == before


@pytest.mark.parametrize("content,message", [
    ("", "is empty"),
    ("[]", "holds no rows (an empty list)"),
    ('{"query": "a", "response": "b"}\n{"query": oops}\n', "line 2 is not JSON"),
])
def test_17_data_errors_name_the_file_and_row(tmp_path, content, message):
    data = tmp_path / ("data.json" if content == "[]" else "data.jsonl")
    data.write_text(content)
    line = _one_line_error(run_cli("train", "--model", "tiny", "--data", data, "--out", tmp_path / "x"), 2)
    assert f"{data} {message}" in line


def test_17_rows_cut_away_by_max_len_are_counted_and_refused_when_none_is_left(tmp_path):
    rows = [{"query": "q " * (60 if i % 2 else 2), "response": "#### 4"} for i in range(8)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["train", "--model", "tiny", "--data", data, "--epochs", "1", "--batch-size", "4",
            "--micro-batch-size", "4", "--eval-size", "2"]
    result = run_cli(*base, "--out", tmp_path / "some", "--max-len", "60")
    assert result.returncode == 0, result.stderr
    notes = json.loads((tmp_path / "some" / "run.json").read_text())["notes"]
    assert any(n.startswith("3 of 6 training rows dropped: the prompt alone fills --max-len 60") for n in notes)
    assert "note: 3 of 6 training rows dropped" in result.stderr
    line = _one_line_error(run_cli(*base, "--out", tmp_path / "none", "--max-len", "8"), 2)
    assert "none of the 6 training rows has a response token left within --max-len 8" in line


# ---------------------------------------------------------------------------------
# 18: one base under two names
# ---------------------------------------------------------------------------------

def _hub_cache(tmp_path: Path, repo: str, source: Path) -> Path:
    """A Hugging Face cache holding ``source`` as the snapshot of ``repo`` (offline)."""
    cache = tmp_path / "hub"
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return cache


def _adapter_on(src: Path, dst: Path, base: str) -> Path:
    shutil.copytree(src, dst)
    _edit_json(dst / "adapter_config.json", base_model_name_or_path=base)
    return dst


def test_18_one_base_named_by_hub_id_and_by_local_snapshot_merges(run, tmp_path):
    from overmem.models.tiny import TINY_DIR
    from tests.helpers import make_tiny_llama

    snapshot = tmp_path / "snapshot"
    shutil.copytree(TINY_DIR, snapshot)
    env = {"HF_HUB_CACHE": str(_hub_cache(tmp_path, "org/tiny", TINY_DIR)), "HF_HUB_OFFLINE": "1"}
    a = _adapter_on(run / "checkpoints" / "ep1", tmp_path / "a", "org/tiny")
    b = _adapter_on(run / "checkpoints" / "ep2", tmp_path / "b", str(snapshot))
    merged = run_cli("merge", a, b, "--out", tmp_path / "m", env=env)
    assert merged.returncode == 0, merged.stderr
    with_base = run_cli("merge", a, b, "--out", tmp_path / "m2", "--base", "org/tiny", env=env)
    assert with_base.returncode == 0, with_base.stderr
    # a base that is another model under its own name is refused, --base or not
    other = make_tiny_llama(tmp_path / "other-model")
    c = _adapter_on(run / "checkpoints" / "ep3", tmp_path / "c", str(other))
    line = _one_line_error(run_cli("merge", a, c, "--out", tmp_path / "m3", env=env), 2)
    assert "the adapters name different bases" in line
    line = _one_line_error(run_cli("merge", a, c, "--out", tmp_path / "m4", "--base", str(snapshot), env=env), 2)
    assert f"c was trained on {other}, not on the base {snapshot}" in line


# ---------------------------------------------------------------------------------
# 19: exit codes
# ---------------------------------------------------------------------------------

def test_19_exit_codes_are_documented():
    readme = (ROOT / "README.md").read_text()
    for code, meaning in (("2", "bad input"), ("3", "corrupt"), ("1", "failed"), ("130", "interrupted")):
        assert f"| {code} |" in readme and meaning in readme


def test_19_an_interrupt_after_the_merge_is_written_is_not_exit_130(run, monkeypatch):
    from typer.testing import CliRunner

    import overmem.merging.merge as merging
    from overmem_tui.cli import app

    real_echo = __import__("typer").echo

    def interrupted_echo(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("overmem_tui.commands.merge.typer.echo", interrupted_echo)
    result = CliRunner().invoke(app, ["merge", "ep1", "ep2", "--run", str(run)])
    assert result.exit_code == 0
    assert (run / "checkpoints" / "merge-ep1+ep2" / "adapter_model.safetensors").is_file()
    monkeypatch.setattr("overmem_tui.commands.merge.typer.echo", real_echo)

    def interrupted_merge(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(merging, "run_merge", interrupted_merge)
    result = CliRunner().invoke(app, ["merge", "ep1", "ep3", "--run", str(run)])
    assert result.exit_code == 130 and not (run / "checkpoints" / "merge-ep1+ep3").exists()


# ---------------------------------------------------------------------------------
# untrusted run.json fields: every one checked where it is read
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change,code,message", [
    ({"data": {"splits": ["val"]}}, 3, "data.splits is not an object"),
    ({"data": {"splits": {"../x": {"source": {"kind": "synthetic", "ref": "synthetic-math"}}}}}, 3, "holds a path"),
    ({"data": {"splits": {"val": {"source": {"kind": "ftp", "ref": "x"}}}}}, 3, "kind 'ftp' is not one of"),
    ({"data": {"splits": {"val": {"source": {"kind": "file", "ref": "/x"}, "count": -4}}}}, 3, "count -4"),
    ({"hyperparameters": {"max_len": "abc"}}, 3, "hyperparameters.max_len 'abc'"),
    ({"prompt_template": {"kind": "evil"}}, 2, "the prompt format"),
    ({"method": ["lora"]}, 3, "method ['lora'] is not a dict"),
    ({"base_model": {"id": 5}}, 3, "id 5 is not a str"),
])
def test_run_json_fields_of_the_wrong_shape_are_one_line(run, change, code, message):
    info = json.loads((run / "run.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(info.get(key), dict) and key != "base_model":
            info[key] = {**info[key], **value}
        else:
            info[key] = value
    (run / "run.json").write_text(json.dumps(info))
    before = _tree(run)
    line = _one_line_error(run_cli("eval", run, "--backend", "hf", "--max-new-tokens", "4"), code)
    assert message in line
    assert _tree(run) == before


def test_4_an_export_of_a_trainer_checkpoint_is_overmems_and_can_be_replaced(run, tmp_path):
    trainer = tmp_path / "trainer"
    ckpt = trainer / "checkpoint-2"
    shutil.copytree(run / "checkpoints" / "ep1", ckpt)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 2, "log_history": []}))
    export = tmp_path / "export"
    assert run_cli("select", trainer, "checkpoint-2", "--export", export).returncode == 0
    again = run_cli("select", trainer, "checkpoint-2", "--export", export, "--force")
    assert again.returncode == 0, again.stderr
    assert "is a Trainer output folder" in _one_line_error(
        run_cli("merge", "checkpoint-2", "ep0", "--run", trainer, "--out", ckpt, "--force"), 2)
    assert (ckpt / "trainer_state.json").is_file()


# ---------------------------------------------------------------------------------
# a second attack (links planted at temporary names, overlays, odd numbers and nesting)
# ---------------------------------------------------------------------------------

def test_a_link_planted_at_a_temporary_name_is_never_written_through(run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    from overmem.rundir.io import atomic_write_json, temp_sibling

    target = run / "selection.json"
    os.symlink(victim, temp_sibling(target))  # the name this process would write first
    atomic_write_json(target, {"checkpoint": "ep1"})
    assert victim.read_text() == "mine" and json.loads(target.read_text()) == {"checkpoint": "ep1"}


def test_links_for_the_lock_and_the_overlay_are_refused(run, tmp_path):
    outside = tmp_path / "outside"
    (run / ".lock").unlink(missing_ok=True)  # the trained run's own lock file
    os.symlink(outside / "lock", run / ".lock")
    _one_line_error(run_cli("train", "--out", run, "--resume"), 1)
    assert not (outside / "lock").exists()
    trainer = tmp_path / "trainer"
    shutil.copytree(run / "checkpoints" / "ep1", trainer / "checkpoint-2")
    (trainer / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    outside.mkdir()
    os.symlink(outside, trainer / "overmem")
    line = _one_line_error(run_cli("report", trainer), 3)
    assert "is a link" in line and list(outside.iterdir()) == []


def test_the_demo_replaces_only_its_own_folder_and_train_never_writes_into_a_trainer_folder(run, tmp_path):
    mine = tmp_path / "project"
    shutil.copytree(run, mine / "myrun")
    (mine / ".git").mkdir()
    line = _one_line_error(run_cli("demo", "--out", mine, "--force", "--no-watch", "--epochs", "1"), 2)
    assert "replaces only a previous demo's folder" in line and (mine / ".git").is_dir()
    line = _one_line_error(run_cli("demo", "--out", run, "--force", "--no-watch", "--epochs", "1"), 2)
    assert (run / "run.json").is_file()
    trainer = tmp_path / "trainer"
    shutil.copytree(run / "checkpoints" / "ep1", trainer / "checkpoint-2")
    (trainer / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    line = _one_line_error(run_cli(*_train_cmd(trainer)[3:]), 2)
    assert "is a Trainer output folder" in line and not (trainer / "run.json").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in _one_line_error(run_cli(*_train_cmd(afile)[3:]), 2)


def test_a_report_replaces_only_an_earlier_report(run, tmp_path):
    _records = [_metric(f"ep{i}", "val", m, v) for i in range(4) for m, v in (("ppl", 3.0 - i * 0.3), ("acc", 0.2 * i))]
    (run / "metrics.jsonl").write_text("\n".join(_records) + "\n")
    notes = tmp_path / "notes.png"
    notes.write_text("mine")
    assert "is not a report overmem wrote" in _one_line_error(run_cli("report", run, "--out", tmp_path / "notes.md"), 2)
    assert notes.read_text() == "mine"
    out = tmp_path / "r.md"
    assert run_cli("report", run, "--out", out).returncode == 0
    assert run_cli("report", run, "--out", out).returncode == 0  # its own earlier report


def test_links_out_of_a_checkpoint_are_not_followed(run, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("key")
    os.symlink(secret, run / "checkpoints" / "ep2" / "leak")
    line = _one_line_error(run_cli("select", run, "ep2", "--export", tmp_path / "export"), 3)
    assert "outside the checkpoint; not exported" in line and not (tmp_path / "export").exists()
    trainer = tmp_path / "trainer"
    shutil.copytree(run / "checkpoints" / "ep1", trainer / "checkpoint-2")
    (trainer / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    os.symlink(run / "checkpoints" / "ep3", trainer / "checkpoint-6")
    loaded = load_run(trainer)
    assert "checkpoint-6" not in [c.name for c in loaded.checkpoints]
    assert any("checkpoint-6 is a link out of this Trainer folder" in p for p in loaded.problems)


def test_a_shard_index_naming_files_outside_the_checkpoint_is_refused(run, tmp_path):
    from overmem.errors import CorruptFile
    from overmem.merging.format import check_weights

    folder = run / "checkpoints" / "ep1"
    names = _tensors(json.loads((folder / "adapter_model.safetensors").read_bytes()[8:8 + int.from_bytes(
        (folder / "adapter_model.safetensors").read_bytes()[:8], "little")]))
    index = folder / "adapter_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {n: "../../../elsewhere.safetensors" for n in names}}))
    with pytest.raises(CorruptFile, match="holds a path separator"):
        check_weights(folder)
    index.write_text(json.dumps({"weight_map": {n: "adapter_model.safetensors" for n in names} | {"x": "other"}}))
    with pytest.raises(CorruptFile, match="'other' of tensor 'x' is not in the folder"):
        check_weights(folder)


BIG = 10**400


@pytest.mark.parametrize("record", [
    {"type": "metric", "checkpoint": "ep1", "split": "val", "metric": "acc", "value": 0.5, "n": BIG},
    {"type": "metric", "checkpoint": "ep1", "split": "val", "metric": "acc", "value": 0.5, "time": BIG},
    {"type": "metric", "checkpoint": "ep1", "split": "val", "metric": "ppl", "value": BIG},
    {"type": "train", "step": BIG, "epoch": 1, "loss": 1.0, "lr": 0.1},
    {"type": "resume", "step": BIG, "checkpoint": "ep1"},
])
def test_numbers_beyond_the_float_range_are_problems(run, record):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    assert any("is not" in p for p in load_run(run).problems)
    assert run_cli("recommend", run, "--json").returncode == 3


@pytest.mark.parametrize("where", ["selection.json", "claims/ep1.json", "state/progress.json",
                                   "checkpoints/ep1/adapter_config.json"])
def test_deeply_nested_json_is_bad_json(run, where):
    (run / where).parent.mkdir(exist_ok=True)
    (run / where).write_text("[" * 100_000 + "]" * 100_000)
    for command in (["recommend", run], ["train", "--out", run, "--resume"],
                    ["merge", "ep1", "ep2", "--run", run, "--out", run.parent / "m"]):
        result = run_cli(*command)
        assert "unexpected" not in result.stderr and "Traceback" not in result.stderr, (command, result.stderr)


@pytest.mark.parametrize("part,content", [("optimizer.pt", b"garbage"), ("trainable.safetensors", b"garbage"),
                                          ("scheduler.pt", b"garbage"), ("python-rng-rank0.json", b"{")])
def test_a_bad_saved_state_is_one_line_and_changes_nothing(run, part, content):
    (run / "state" / part).write_bytes(content)
    # the state at ep2, so resuming has an epoch left to train (ep3 is then retrained)
    progress = json.loads((run / "state" / "progress.json").read_text())
    assert progress["checkpoint"] == "ep3"
    line = _one_line_error(run_cli("train", "--out", run, "--resume"), 3)
    assert "cannot resume from the saved state" in line
    assert load_run(run).status == "finished"


def test_a_resume_point_two_checkpoints_back_is_refused(run):
    _edit_json(run / "state" / "progress.json", epoch=1, step_in_epoch=0, global_step=2, checkpoint="ep1")
    line = _one_line_error(run_cli("train", "--out", run, "--resume"), 3)
    assert "ep2, ep3 were saved after it" in line


@pytest.mark.parametrize("change,message", [({"r": 0}, "r 0"), ({"r": "four"}, "r 'four'"),
                                            ({"lora_alpha": float("nan")}, "lora_alpha nan"),
                                            ({"peft_type": "IA3"}, "peft_type 'IA3' is not LORA"),
                                            ({"base_model_name_or_path": ["x"]}, "base_model_name_or_path ['x']")])
def test_an_adapter_config_of_the_wrong_shape_is_one_line(run, change, message):
    _edit_json(run / "checkpoints" / "ep1" / "adapter_config.json", **change)
    line = _one_line_error(run_cli("merge", "ep1", "ep2", "--run", run), 3)
    assert message in line
    line = _one_line_error(run_cli("eval", run, "--checkpoints", "ep1", "--backend", "hf", "--limit", "1",
                                   "--max-new-tokens", "2", "--metrics", "ppl"), 3)
    assert message in line


@pytest.mark.parametrize("args,message", [
    (["merge", "ep1", "ep2", "--run", "{run}", "--method", "ties", "--param", "density=nan"], "density"),
    (["merge", "ep1", "ep2", "--run", "{run}", "--weights", "-1e308,1e308"], "weights must be finite numbers of at most"),
    (["merge", "ep1", "ep2", "--run", "{run}", "--shard-size", "0"], "--shard-size must be at least 1"),
    (["probe", "{run}", "--n-samples", "99999999999"], "--n-samples must be at most 1000"),
    (["probe", "{run}", "--temperature", "nan"], "--temperature must be a finite number"),
    (["train", "--out", "{run}x", "--model", "tiny", "--data", "synthetic-math", "--rank", "99999999999999999999999"],
     "--rank must be"),
    (["train", "--out", "{run}x", "--model", "tiny", "--data", "synthetic-math", "--epochs", "99999999999999"],
     "--epochs must be at most 100000"),
    (["eval", "{run}", "--split-file", "x=/dev/zero"], "is neither a data file nor a folder"),
])
def test_numbers_and_files_out_of_range_are_refused_before_work(run, args, message):
    line = _one_line_error(run_cli(*[a.format(run=run) for a in args]), 2)
    assert message in line
    assert not (run / "checkpoints" / "merge-ep1+ep2").exists()


def test_escape_sequences_in_names_are_shown_escaped(run):
    (run / "checkpoints" / "ep\x1b[31mred").mkdir()
    result = run_cli("recommend", run)
    assert "\x1b[31m" not in result.stdout + result.stderr and "\\x1b[31m" in result.stdout + result.stderr


def test_a_run_whose_every_record_is_invalid_says_so(tmp_path):
    trainer = tmp_path / "trainer"
    (trainer / "checkpoint-2").mkdir(parents=True)
    (trainer / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 2, "log_history": [
        {"step": 2, "epoch": 1.0, "eval_loss": -800, "eval_accuracy": 250}]}))
    line = _one_line_error(run_cli("recommend", trainer, "--json"), 3)
    assert "could not be used" in line and "is below 1" in line


def test_a_prompt_format_without_a_place_for_the_question_is_refused(run):
    info = json.loads((run / "run.json").read_text())
    info["prompt_template"] = {"a": 1}
    (run / "run.json").write_text(json.dumps(info))
    assert "the prompt format" in _one_line_error(run_cli("eval", run, "--backend", "hf"), 2)


# ---------------------------------------------------------------------------------
# a third attack: FIFOs, huge files, loops of links, hard links, forged locations
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["selection.json", "checkpoints/ep1/checkpoint.json"])
def test_a_fifo_where_a_record_file_belongs_never_hangs(run, where):
    (run / where).unlink(missing_ok=True)
    os.mkfifo(run / where)
    result = run_cli("recommend", run, timeout=120)  # a hang would time the test out
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr


def test_loops_of_links_are_one_line(run, tmp_path):
    os.symlink("ep9", run / "checkpoints" / "ep9")
    assert any("loop" in p for p in load_run(run).problems)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for args in (["recommend", tmp_path / "a"], ["merge", "ep1", "ep2", "--run", run, "--out", tmp_path / "a" / "m"],
                 ["select", run, "ep1", "--export", tmp_path / "a" / "x"]):
        _one_line_error(run_cli(*args))
    os.symlink(".", run / "checkpoints" / "ep2" / "self")
    assert "a folder or outside the checkpoint" in _one_line_error(
        run_cli("select", run, "ep2", "--export", tmp_path / "export"), 3)


def test_a_hard_linked_metrics_file_is_not_appended_to(run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text((run / "metrics.jsonl").read_text() + "TAIL")
    (run / "metrics.jsonl").unlink()
    os.link(victim, run / "metrics.jsonl")
    before = victim.read_text()
    result = run_cli("eval", run, "--checkpoints", "ep1", "--splits", "val", "--metrics", "ppl", "--backend", "hf",
                     "--limit", "1")
    assert "hard link" in _one_line_error(result, 1)
    assert victim.read_text() == before


def test_a_forged_location_is_not_read(run, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("key")
    forged = run / "checkpoints" / "merge-ep1+ep2"
    forged.mkdir()
    (forged / "checkpoint.json").write_text(json.dumps({"name": "merge-ep1+ep2", "kind": "merge",
                                                        "parents": ["ep1", "ep2"], "extra": {"location": str(secret)}}))
    assert any("no merge overmem wrote" in p for p in load_run(run).problems)
    _one_line_error(run_cli("select", run, "merge-ep1+ep2", "--export", tmp_path / "export"), 2)
    assert not (tmp_path / "export").exists()
    # a real merge elsewhere is read through its location
    shutil.rmtree(forged)
    assert run_cli("merge", "ep1", "ep2", "--run", run, "--out", tmp_path / "m").returncode == 0
    assert load_run(run).checkpoint("merge-ep1+ep2").path == tmp_path / "m"


def test_names_with_invisible_or_invalid_characters_are_refused(run):
    for name in ("v\u202ex", "v\x9bx", "v\x7fx"):
        with open(run / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"type": "metric", "checkpoint": "ep1", "split": name, "metric": "ppl",
                                 "value": 2.0, "n": 4}) + "\n")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"type":"metric","checkpoint":"ep1","split":"v\\ud800x","metric":"ppl","value":2.0,"n":4}\n')
    run_ = load_run(run)
    assert sum("not printable" in p for p in run_.problems) == 4 and run_.splits() == ()
    result = run_cli("recommend", run)
    assert "unexpected" not in result.stderr and "\u202e" not in result.stdout + result.stderr


def test_trainer_entries_without_a_step_or_logged_twice_are_problems(tmp_path):
    from overmem.rundir.hf_trainer import read_trainer_folder

    trainer = tmp_path / "trainer"
    (trainer / "checkpoint-2").mkdir(parents=True)
    (trainer / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 2, "log_history": [
        {"epoch": 1.0, "eval_loss": 0.2}, {"step": 2, "epoch": 1.0, "eval_loss": 1.2},
        {"step": 2, "epoch": 1.0, "eval_loss": 0.3}]}))
    parsed = read_trainer_folder(trainer)
    assert [c.name for c in parsed.checkpoints] == ["checkpoint-2"]
    text = "\n".join(parsed.problems)
    assert "log_history[0]: step is missing" in text and "logged eval_loss on val again with another value" in text


def test_an_accuracy_over_no_rows_is_no_measurement(run):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(_metric("ep2", "val", "acc", 1.0, n=0, replaces=True) + "\n")
    assert any("acc over n 0 rows" in p for p in load_run(run).problems)


def test_a_merge_made_again_is_evaluated_afresh(run):
    assert run_cli("merge", "ep1", "ep3", "--run", run).returncode == 0
    ev = ["eval", run, "--checkpoints", "merge-ep1+ep3", "--metrics", "ppl", "--splits", "val", "--backend", "hf"]
    assert run_cli(*ev).returncode == 0
    first = [m.value for m in load_run(run).metrics if m.checkpoint == "merge-ep1+ep3" and m.aggregate == "mean"]
    assert run_cli("merge", "ep1", "ep3", "--run", run, "--weights", "0.9,0.1", "--force").returncode == 0
    assert run_cli("merge", "ep1", "ep3", "--run", run, "--force").returncode == 0
    assert [m for m in load_run(run).metrics if m.checkpoint == "merge-ep1+ep3"] == []  # the old merge's are gone
    assert run_cli(*ev).returncode == 0
    again = [m.value for m in load_run(run, strict=True).metrics
             if m.checkpoint == "merge-ep1+ep3" and m.aggregate == "mean"]
    assert len(again) == 1 and again == pytest.approx(first)  # the same merge again: the same value, once


def test_a_huge_synthetic_split_is_refused(run):
    info = json.loads((run / "run.json").read_text())
    info["data"]["splits"]["val"]["count"] = 10**15
    (run / "run.json").write_text(json.dumps(info))
    line = _one_line_error(run_cli("eval", run, "--splits", "val", "--limit", "1", "--backend", "hf", timeout=120))
    assert "more than 10,000,000 rows" in line


def test_a_report_never_replaces_a_file_that_only_mentions_it(run, tmp_path):
    records = [_metric(f"ep{i}", "val", m, v) for i in range(4) for m, v in (("ppl", 3.0 - i * 0.3), ("acc", 0.2 * i))]
    (run / "metrics.jsonl").write_text("\n".join(records) + "\n")
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n\nmade with overmem report: see below\n")
    assert "is not a report overmem wrote" in _one_line_error(run_cli("report", run, "--out", readme))


def test_a_merge_whose_result_is_not_finite_writes_nothing(run):
    import torch
    from safetensors.torch import load_file, save_file

    file = run / "checkpoints" / "ep1" / "adapter_model.safetensors"
    tensors = load_file(str(file))
    name = next(k for k in tensors if "lora_B" in k)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(file))
    line = _one_line_error(run_cli("merge", "ep1", "ep2", "--run", run), 2)
    assert "is not finite" in line and not (run / "checkpoints" / "merge-ep1+ep2").exists()
