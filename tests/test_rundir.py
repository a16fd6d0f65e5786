"""The run-directory contract: atomic files, locked appends, tails, claims, reader."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import pytest

from overmem.errors import CorruptRun, OutputExists, RunNotFound
from overmem.rundir import (
    CheckpointInfo,
    Metric,
    RunDir,
    RunInfo,
    RunReader,
    TrainLog,
    load_run,
)
from overmem.rundir.io import JsonlTail, append_line


def _append_many(path, worker, count):
    for i in range(count):
        # long lines make interleaving likely if writes were not atomic
        append_line(path, {"type": "metric", "checkpoint": f"w{worker}", "split": "val",
                           "metric": "ppl", "value": float(i), "pad": "x" * 5000})


def test_concurrent_appenders_never_interleave(tmp_path):
    path = tmp_path / "metrics.jsonl"
    procs = [mp.Process(target=_append_many, args=(path, w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 800
    rows = [json.loads(line) for line in lines]  # every line is whole
    for w in range(4):
        values = [r["value"] for r in rows if r["checkpoint"] == f"w{w}"]
        assert values == [float(i) for i in range(200)]


def test_tail_skips_a_torn_line_until_complete(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []  # missing file is a state, not an error
    path.write_text('{"a": 1}\n{"b": ')
    first = tail.read_new()
    assert [line.text for line in first] == ['{"a": 1}'] and tail.torn
    assert tail.read_new() == []
    with open(path, "a") as fh:
        fh.write('2}\n{"c": 3}\n')
    second = tail.read_new()
    assert [(line.lineno, line.text) for line in second] == [(2, '{"b": 2}'), (3, '{"c": 3}')]
    assert not tail.torn
    path.write_text('{"z": 0}\n')  # rewritten smaller: start over
    assert [line.text for line in tail.read_new()] == ['{"z": 0}'] and tail.restarted


def _new_run(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.create(RunInfo(status="running", base_model={"id": "tiny", "path": None}))
    return rd


def test_checkpoint_appears_only_when_complete(tmp_path):
    rd = _new_run(tmp_path)
    reader = RunReader(rd.path)
    assert [c.name for c in reader.snapshot().checkpoints] == ["ep0"]
    with rd.stage_checkpoint(CheckpointInfo("ep1", "adapter", epoch=1, step=10)) as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
        assert [c.name for c in load_run(rd.path).checkpoints] == ["ep0"]
    run = reader.poll()
    assert [c.name for c in run.checkpoints] == ["ep0", "ep1"]
    ep1 = run.checkpoint("ep1")
    assert ep1.kind == "adapter" and ep1.epoch == 1 and ep1.step == 10 and ep1.created > 0
    with pytest.raises(OutputExists):
        with rd.stage_checkpoint(CheckpointInfo("ep1", "adapter", epoch=1)):
            pass
    with pytest.raises(RuntimeError):
        with rd.stage_checkpoint(CheckpointInfo("ep2", "adapter", epoch=2)) as tmp:
            (tmp / "half").write_bytes(b"x")
            raise RuntimeError("killed mid-write")
    assert not rd.checkpoint("ep2").exists()
    assert not [p for p in rd.checkpoints.iterdir() if p.name.startswith(".")]


def test_reader_poll_returns_only_changes(tmp_path):
    rd = _new_run(tmp_path)
    reader = RunReader(rd.path)
    reader.snapshot()
    assert reader.poll() is None
    rd.append([Metric("ep0", "val", "ppl", 3.0, "mean", 10), TrainLog(step=1, epoch=0.1, loss=2.0, lr=1e-4)])
    run = reader.poll()
    assert len(run.metrics) == 1 and len(run.train_logs) == 1
    with open(rd.metrics, "a") as fh:
        fh.write('{"type": "metric", "checkpoint": "ep0"')
    run = reader.poll()
    assert run.torn_tail and len(run.metrics) == 1 and not run.problems
    with open(rd.metrics, "a") as fh:
        fh.write(', "split": "test", "metric": "acc", "value": 0.5}\n')
    run = reader.poll()
    assert not run.torn_tail and [m.split for m in run.metrics] == ["val", "test"]
    rd.set_status("finished")
    assert reader.poll().status == "finished"


def test_bad_lines_are_problems_and_strict_mode_refuses(tmp_path):
    rd = _new_run(tmp_path)
    with open(rd.metrics, "w") as fh:
        fh.write('{"type": "metric", "checkpoint": "ep0", "split": "val", "metric": "ppl", "value": 3.0}\n')
        fh.write('{"type": "metric", "checkpoint": "ep1", "split": "val", "metric": "ppl", "value": "abc"}\n')
        fh.write("not json\n")
    run = load_run(rd.path)
    assert len(run.metrics) == 1
    assert run.problems[0] == "metrics.jsonl:2: checkpoint ep1, split val: ppl 'abc' is not a number"
    assert run.problems[1].startswith("metrics.jsonl:3:")
    with pytest.raises(CorruptRun, match="metrics.jsonl:2: checkpoint ep1, split val: ppl 'abc' is not a number"):
        load_run(rd.path, strict=True)


def test_not_a_run(tmp_path):
    with pytest.raises(RunNotFound, match="no such directory"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunNotFound, match="neither an overmem run"):
        load_run(tmp_path)


def test_schema_version_from_the_future_is_refused(tmp_path):
    rd = _new_run(tmp_path)
    obj = json.loads(rd.run_json.read_text())
    obj["schema_version"] = 99
    rd.run_json.write_text(json.dumps(obj))
    with pytest.raises(CorruptRun, match="schema_version 99"):
        load_run(rd.path, strict=True)


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    rd = _new_run(tmp_path)
    claim = rd.try_claim("ep1")
    assert claim and claim.held()
    assert rd.try_claim("ep1") is None  # held by a live process (this one)
    claim.release()
    assert not claim.held() and rd.claimed() == []
    again = rd.try_claim("ep1")
    assert again
    again.release()
    # a claim left by a dead process on this host is taken over at once
    proc = mp.Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    path = rd.claim_path("ep2")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"pid": proc.pid, "host": os.uname().nodename, "heartbeat": time.time()}))
    assert rd.try_claim("ep2")


def test_a_claim_from_another_host_is_a_lease_that_expires(tmp_path):
    """A dead evaluator on another machine cannot be asked: its claim expires with its heartbeat."""
    rd = _new_run(tmp_path)
    path = rd.claim_path("ep3")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x", "heartbeat": time.time()}))
    assert rd.try_claim("ep3") is None  # fresh heartbeat: live, keep off
    assert rd.try_claim("ep3", timeout=0.5) is None
    old = time.time() - 10
    os.utime(path, (old, old))
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x", "heartbeat": old}))
    os.utime(path, (old, old))
    assert rd.try_claim("ep3") is None  # 10 s is within the default timeout
    taken = rd.try_claim("ep3", timeout=5)
    assert taken and taken.held()
    stolen = rd.try_claim("ep3", steal=True)  # --steal-claims: a human who knows better
    assert stolen and stolen.held() and not taken.held()
    assert not taken.refresh()  # the old holder learns it lost the claim


def test_heartbeat_keeps_a_claim_fresh_and_releases_it(tmp_path):
    from overmem.rundir.claims import is_stale

    rd = _new_run(tmp_path)
    claim = rd.try_claim("ep1")
    first = json.loads(rd.claim_path("ep1").read_text())["heartbeat"]
    with claim.heartbeat(interval=0.05):
        beats = [first]
        deadline = time.time() + 10  # a loaded machine's fsync may stall a beat: wait for two, not a fixed time
        while len(beats) < 3 and time.time() < deadline:
            time.sleep(0.02)
            beat = json.loads(rd.claim_path("ep1").read_text())["heartbeat"]
            if beat > beats[-1]:
                beats.append(beat)
        assert len(beats) == 3, beats  # refreshed again and again, not once
        assert not is_stale(rd.claim_path("ep1"), timeout=2.0, now=time.time())
    assert rd.claimed() == []


def test_sidecars_round_trip(tmp_path):
    rd = _new_run(tmp_path)
    rows = [{"idx": 0, "nll_sum": 1.5, "n_tokens": 3}, {"idx": 1, "nll_sum": 0.5, "n_tokens": 2}]
    path = rd.write_sidecar("ep1", "test", "ppl", rows)
    assert path == rd.path / "samples" / "ep1" / "test.ppl.jsonl"
    assert rd.read_sidecar("ep1", "test", "ppl") == rows
    assert rd.read_sidecar("ep9", "test", "ppl") == []
