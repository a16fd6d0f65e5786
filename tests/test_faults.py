"""Nothing hangs, nothing is lost: kills, full disks, many writers, no terminal."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from overmem.rundir import load_run
from tests.helpers import ROOT, make_tiny_llama, run_cli, word_tokenizer


def _train_cmd(out: Path, epochs: int = 3) -> list[str]:
    return [sys.executable, "-m", "overmem_tui.cli", "train", "--model", "tiny", "--data", "synthetic-math",
            "--out", str(out), "--method", "lora", "--rank", "8", "--alpha", "16", "--epochs", str(epochs),
            "--batch-size", "8", "--micro-batch-size", "8", "--lr", "3e-3", "--train-size", "16", "--eval-size", "4"]


@pytest.fixture
def trained(trained_run) -> Path:
    """The session's trained tiny LoRA run (conftest.py; ep0 = the base, ep1, ep2), a private copy."""
    return trained_run


def _keys(run_path: Path) -> Counter:
    run = load_run(run_path, strict=True)  # strict: no torn or broken line anywhere
    return Counter((m.checkpoint, m.split, m.metric, m.aggregate) for m in run.metrics if m.probe is None)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("metrics.jsonl", "samples", "claims"))
    return dst


@pytest.mark.slow
def test_sigkill_mid_checkpoint_then_rerun_records_each_once(trained, tmp_path):
    work = _copy(trained, tmp_path / "run")
    cmd = [sys.executable, "-m", "overmem_tui.cli", "eval", str(work), "--backend", "hf", "--max-new-tokens", "16"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 4):  # ep0 is half done
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work / "claims" / "ep0.json").exists()  # the dead evaluator's claim is left behind
    again = run_cli("eval", work, "--backend", "hf", "--max-new-tokens", "16")
    assert again.returncode == 0, again.stderr
    keys = _keys(work)
    assert keys and set(keys.values()) == {1}
    expected = {(c, s, m, a) for c in ("ep0", "ep1", "ep2") for s in ("train", "val", "test")
                for m, a in (("ppl", "mean"), ("ppl", "token"), ("ppl", "median"), ("acc", "mean"))}
    assert set(keys) == expected
    assert [p.name for p in (work / "claims").glob("*.json")] == []


@pytest.mark.slow
def test_sigkill_merge_mid_write_leaves_nothing_listed(tmp_path):
    from overmem.rundir import CheckpointInfo, RunDir, RunInfo

    base = make_tiny_llama(tmp_path / "base", word_tokenizer(), hidden=256, layers=4)
    rd = RunDir(tmp_path / "run")
    rd.create(RunInfo(status="finished", base_model={"id": str(base), "path": str(base)}))
    from transformers import AutoModelForCausalLM

    for i in (1, 2):
        with rd.stage_checkpoint(CheckpointInfo(f"ep{i}", "full", epoch=float(i), step=i)) as folder:
            AutoModelForCausalLM.from_pretrained(base).save_pretrained(folder)
    cmd = [sys.executable, "-m", "overmem_tui.cli", "merge", "ep1", "ep2", "--run", str(rd.path),
           "--shard-size", "1"]
    for _ in range(5):  # until the kill lands while the merge is being written
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        staging = None
        while proc.poll() is None and staging is None:
            staging = next(rd.checkpoints.glob(".merge-*staging*"), None)
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if staging is not None:
            break
        # missed: the merge finished (or had not begun); undo it so the next try writes it again
        shutil.rmtree(rd.checkpoints / "merge-ep1+ep2", ignore_errors=True)
    assert staging is not None, "never caught the merge mid-write"
    assert [c.name for c in load_run(rd.path).checkpoints if c.kind == "merge"] == []
    done = run_cli("merge", "ep1", "ep2", "--run", rd.path, "--force")
    assert done.returncode == 0, done.stderr
    assert [c.name for c in load_run(rd.path).checkpoints if c.kind == "merge"] == ["merge-ep1+ep2"]


@pytest.mark.slow
async def test_three_followers_a_trainer_and_a_watch(tmp_path):
    """Each record exactly once, and the watch screen ends equal to a fresh read."""
    from overmem_tui.app import make_app

    out = tmp_path / "live"
    trainer = subprocess.Popen(_train_cmd(out, epochs=3), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    while not (out / "run.json").exists():
        assert trainer.poll() is None, trainer.stderr.read().decode()[-2000:]
        await asyncio.sleep(0.05)
    followers = [subprocess.Popen([sys.executable, "-m", "overmem_tui.cli", "eval", str(out), "--follow",
                                   "--backend", "hf", "--max-new-tokens", "8"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(3)]
    app = make_app([out], poll_interval=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        while any(p.poll() is None for p in [trainer, *followers]):
            await pilot.pause(0.2)
        for p in [trainer, *followers]:
            assert p.returncode == 0, p.stderr.read().decode()[-2000:]
        fresh = load_run(out, strict=True)
        screen = app.watch_screen
        deadline = time.time() + 10
        while screen.state.view is None or len(screen.state.view.run.metrics) != len(fresh.metrics):
            assert time.time() < deadline
            await pilot.pause(0.1)
        assert sorted(m.key() for m in screen.state.view.run.metrics) == sorted(m.key() for m in fresh.metrics)
    keys = _keys(out)
    assert set(keys.values()) == {1}
    assert {k[0] for k in keys} == {"ep0", "ep1", "ep2", "ep3"}


class _FullDisk:
    """os as the run writer sees it, except that writes to files named ``target`` fail with
    ENOSPC once ``budget`` bytes have gone to them (the disk fills up mid-write)."""

    def __init__(self, budget: int, target: str) -> None:
        self.budget = budget
        self.target = target

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(self.target):
            return os.write(fd, data)
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = os.write(fd, bytes(data[: self.budget]))
        self.budget -= n
        return n


def test_full_disk_during_a_metric_append(trained, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from overmem.rundir import io
    from overmem_tui.cli import app

    work = _copy(trained, tmp_path / "run")
    monkeypatch.setattr(io, "os", _FullDisk(40, "metrics.jsonl"))  # the first record is cut after 40 bytes
    result = CliRunner().invoke(app, ["eval", str(work), "--backend", "hf", "--max-new-tokens", "8",
                                      "--checkpoints", "ep1", "--metrics", "ppl"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("overmem: error:")]
    assert errors == [errors[0]] and "No space left on device" in errors[0]
    assert (work / "metrics.jsonl").read_bytes().count(b"\n") == 0  # a torn fragment, nothing whole
    monkeypatch.undo()
    assert load_run(work).torn_tail  # readable: the fragment waits as a torn tail
    again = CliRunner().invoke(app, ["eval", str(work), "--backend", "hf", "--max-new-tokens", "8",
                                     "--checkpoints", "ep1", "--metrics", "ppl"])
    assert again.exit_code == 0, again.stderr
    keys = _keys(work)  # the fragment was cut before the next record: every line whole
    assert set(keys.values()) == {1} and len(keys) == 9


def test_full_disk_during_a_checkpoint_save(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from overmem.rundir import io
    from overmem.training import trainer as trainer_module
    from overmem_tui.cli import app

    out = tmp_path / "run"
    original = trainer_module.Training._save

    def save_with_full_disk(self, name, *args, **kwargs):
        if name == "ep2":
            # the checkpoint's own record is written through a temporary name: match its prefix
            monkeypatch.setattr(io, "os", _FullDisk(0, f"checkpoint.json.tmp-{os.getpid()}"))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Training, "_save", save_with_full_disk)
    result = CliRunner().invoke(app, _train_cmd(out)[3:])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("overmem: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    monkeypatch.undo()
    run = load_run(out, strict=True)
    assert [c.name for c in run.checkpoints] == ["ep0", "ep1"]  # no half-written ep2
    assert run.status == "failed"
    assert not list((out / "checkpoints").glob(".*"))  # no staging folder left behind
    resumed = CliRunner().invoke(app, ["train", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.stderr
    assert [c.name for c in load_run(out).checkpoints] == ["ep0", "ep1", "ep2", "ep3"]


def test_watch_without_a_terminal_says_so_at_once(tmp_path):
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "overmem_tui.cli", "watch", str(tmp_path / "missing")],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.strip() == ("overmem: error: watch needs a terminal; use overmem recommend for text "
                                     "output")
    assert time.time() - start < 20  # no waiting for a terminal: the interpreter's start on a loaded machine at most


def test_watch_on_a_missing_path_with_a_terminal(tmp_path):
    import pty

    start = time.time()
    pid, fd = pty.fork()
    if pid == 0:  # the child runs overmem watch on a terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "overmem_tui.cli", "watch", str(tmp_path / "nope")])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    text = output.decode(errors="replace")
    assert "no such directory" in text and "--wait" in text
    assert time.time() - start < 20  # says so and exits: no waiting for the folder
