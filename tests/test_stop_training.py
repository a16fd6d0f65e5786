"""Training that stops itself, through its run: a stop request, the trainer's stop and --resume."""

from __future__ import annotations

import pytest

from overmem.errors import UsageError
from overmem.rundir import RunDir, load_run
from overmem.rundir.lines import Stop
from overmem.stopping import last_stop, pending_request
from overmem.training.early_stop import request_stop
from overmem.training.trainer import train
from overmem_tui.app import make_app
from tests.test_training import tiny_cfg
from tests.test_tui import FIXED_CLOCK, loaded, settle


def test_a_request_stops_the_trainer_at_its_next_checkpoint_and_resume_goes_on(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", epochs=3)

    def ask_at_ep1(training, name):  # what watch's key writes, while ep1 is being saved
        if name == "ep1":
            request_stop(training.rundir.path)

    train(cfg, after_checkpoint=ask_at_ep1)
    run = load_run(cfg.out)
    assert run.status == "stopped"
    assert [c.name for c in run.checkpoints if c.trained] == ["ep1"]
    stop = last_stop(run)
    assert (stop.by, stop.checkpoint, stop.done) == ("user", "ep1", True) and pending_request(run) is None
    # --resume continues on purpose: the request was carried out, it does not stop it again
    train(cfg, resume=True)
    run = load_run(cfg.out)
    assert run.status == "finished" and [c.name for c in run.checkpoints if c.trained] == ["ep1", "ep2", "ep3"]


def test_a_request_left_before_a_restart_is_honoured_by_the_resumed_trainer(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", epochs=3)

    def die_at_ep1(training, name):  # the trainer dies right after saving ep1
        if name == "ep1":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train(cfg, after_checkpoint=die_at_ep1)
    rd = RunDir(cfg.out)
    rd.set_status("running")
    rd.append([Stop("asked from overmem watch")])  # asked while no trainer was there to read it
    train(cfg, resume=True)
    run = load_run(cfg.out)
    assert run.status == "stopped" and [c.name for c in run.checkpoints if c.trained] == ["ep1", "ep2"]
    assert last_stop(run).checkpoint == "ep2" and pending_request(run) is None


def test_a_stop_request_for_a_run_that_is_not_training_is_one_line(paper_run, trainer_output):
    with pytest.raises(UsageError, match="not training"):
        request_stop(paper_run)  # finished
    with pytest.raises(UsageError, match="Trainer output folder"):
        request_stop(trainer_output)
    assert load_run(paper_run).stops == ()


async def test_watch_key_asks_a_running_training_to_stop(paper_run):
    RunDir(paper_run).set_status("running")
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        await pilot.press("t")
        await settle(pilot, lambda: app.screen.__class__.__name__ == "StopScreen")
        await pilot.press("escape")  # cancelled: nothing is asked
        await settle(pilot, lambda: app.screen.__class__.__name__ == "WatchScreen")
        assert load_run(paper_run).stops == ()
        await pilot.press("t")
        await settle(pilot, lambda: app.screen.__class__.__name__ == "StopScreen")
        await pilot.click("#go")
        await settle(pilot, lambda: app.screen.__class__.__name__ == "WatchScreen")
    stops = load_run(paper_run).stops
    assert len(stops) == 1 and stops[0].by == "user" and not stops[0].done


async def test_watch_key_on_a_finished_run_says_why_in_the_dialog(paper_run):
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        await pilot.press("t")
        await settle(pilot, lambda: app.screen.__class__.__name__ == "StopScreen")
        await pilot.click("#go")
        await settle(pilot, lambda: "not training" in str(app.screen.query_one("#status").render()))
    assert load_run(paper_run).stops == ()


def test_the_stop_rule_stops_the_trainer_once_patience_checkpoints_are_purple(tmp_path):
    """The trainer reads the run's evaluations at each checkpoint (here recorded by hand, as an
    evaluator beside it would) and stops at the first boundary where the rule holds."""
    from overmem.rundir import Metric

    values = {"ep0": (9.0, 0.10), "ep1": (3.0, 0.80), "ep2": (3.2, 0.81), "ep3": (6.0, 0.80), "ep4": (7.0, 0.80)}
    cfg = tiny_cfg(tmp_path / "run", epochs=5, stop_at="purple", patience=2)

    def evaluate(training, name):
        ppl, acc = values[name]
        training.rundir.append([Metric(name, "val", "ppl", ppl, "mean", 100), Metric(name, "val", "acc", acc, "mean", 100)])

    train(cfg, after_checkpoint=evaluate)
    run = load_run(cfg.out)
    assert run.status == "stopped"
    assert [c.name for c in run.checkpoints if c.trained] == ["ep1", "ep2", "ep3", "ep4"]
    stop = last_stop(run)
    assert (stop.by, stop.checkpoint) == ("rule", "ep4") and "ep3, ep4" in stop.reason
    assert run.info.hyperparameters["stop_at"] == "purple" and run.info.hyperparameters["patience"] == 2


@pytest.mark.parametrize("args, says", [(["--stop-at", "sometimes"], "--stop-at"), (["--patience", "0"], "--patience"),
                                        (["--patience", "-2"], "--patience")])
def test_bad_stop_options_are_one_line(tmp_path, args, says):
    from tests.helpers import run_cli

    done = run_cli("train", "--model", "tiny", "--data", "synthetic-math", "--out", str(tmp_path / "run"),
                   "--epochs", "1", "--train-size", "8", *args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_trainer_that_cannot_read_its_run_keeps_training_and_says_so_once(tmp_path, monkeypatch):
    from overmem.training import early_stop

    notes = []
    stopper = early_stop.EarlyStop(RunDir(tmp_path), "purple", 2, notes.append)

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(early_stop, "load_run", unreadable)
    assert stopper.after("ep1", 10) is None and stopper.after("ep2", 20) is None
    assert len(notes) == 1 and "Permission denied" in notes[0] and "training goes on" in notes[0]
