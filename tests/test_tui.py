"""The watch TUI driven through the same app factory the CLI uses (Textual Pilot)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from overmem_tui.app import make_app

FIXED_CLOCK = lambda: 1_700_000_100.0  # noqa: E731 - status ages stay the same in snapshots


async def settle(pilot, until=lambda: True, timeout: float = 10.0):
    """Let the poll worker deliver, until a condition holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await pilot.pause(0.05)
    while not until():
        assert loop.time() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def table_names(app):
    from textual.widgets import DataTable

    table = app.watch_screen.query_one("#table", DataTable)
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


def loaded(app):
    screens = [s for s in app.screen_stack if s.__class__.__name__ == "WatchScreen"]
    return bool(screens) and screens[0].state is not None and screens[0].state.summary is not None


async def test_keys_drive_state(paper_run):
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        screen = app.watch_screen
        assert table_names(app)[:3] == ["ep0", "ep1", "ep2"]
        await pilot.press("a")
        assert screen.selected() == "ep5"  # the recommendation
        await pilot.press("space", "down", "down", "down", "down", "down", "space")
        assert screen.state.marked == {"ep5", "ep10"}
        await pilot.press("space")
        assert screen.state.marked == {"ep5"}
        await pilot.press("s")
        assert screen.state.summary.split == "test"
        await pilot.press("s")
        assert screen.state.summary.split == "train"
        await pilot.press("b")
        assert screen.state.thresholds.band == pytest.approx(1.30)
        await pilot.press("B", "B")
        assert screen.state.thresholds.band == pytest.approx(1.20)
        await pilot.press("p")
        assert screen.state.thresholds.ppl_factor == pytest.approx(1.6)
        await pilot.press("P")
        assert screen.state.thresholds.ppl_factor == pytest.approx(1.5)
        await pilot.press("l")
        assert screen.state.log_scale and screen.query_one("#ppl-plot").plot.log_y
        await pilot.press("o")
        assert screen.state.sort == "ppl"
        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("enter")
        assert app.screen.__class__.__name__ == "DetailScreen"
        await pilot.pause(0.3)
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("q")
    assert app.return_code == 0 or app.return_code is None


async def test_thresholds_move_the_recommendation_live(paper_run):
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        screen = app.watch_screen
        assert screen.state.summary.advice.recommended == "ep5"
        for _ in range(5):
            await pilot.press("B")  # band 1.25 -> 1.0
        assert screen.state.summary.advice.recommended == "ep3"


async def test_live_update_torn_line_and_missing_file(paper_run):
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        screen = app.watch_screen
        with open(paper_run / "metrics.jsonl", "a") as fh:
            fh.write('{"type": "metric", "checkpoint": "ep10", "split": "val", "metric": "acc", "value": 0.1')
            fh.flush()
        await settle(pilot, lambda: screen.state.view.run.torn_tail)
        status = str(screen.query_one("#status").render())
        assert "waiting for a line to complete" in status
        with open(paper_run / "metrics.jsonl", "a") as fh:
            fh.write(', "aggregate": "mean", "n": 1319}\n')
        await settle(pilot, lambda: screen.state.summary.rows[-1].get("val").acc == 0.1)
        assert screen.state.summary.advice.phases.of("ep10").phase.value == "overfit"
        (paper_run / "metrics.jsonl").unlink()  # a missing file is a state, not a crash
        await pilot.pause(0.3)
        assert app.is_running


async def test_missing_run_is_shown_not_fatal(tmp_path):
    app = make_app([tmp_path / "nope"], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.watch_screen
        await settle(pilot, lambda: "no such directory" in str(screen.query_one("#status").render()))
        (tmp_path / "nope").mkdir()
        await settle(pilot, lambda: "neither an overmem run" in str(screen.query_one("#status").render()))
        assert app.is_running


async def test_hf_trainer_folder(trainer_output):
    app = make_app([trainer_output], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        # a full finetuning whose configs do not name their base: no ep0 until eval --base says it
        assert table_names(app) == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
        assert app.watch_screen.query_one("#ppl-plot").plot.series


async def test_two_runs_switch_and_compare(paper_run, tmp_path):
    other = tmp_path / "lr-high"
    shutil.copytree(paper_run, other)
    app = make_app([paper_run, other], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app) and all(app.watch_screen.state.views))
        screen = app.watch_screen
        assert "paper_run" in str(screen.query_one("#runs").render())
        await pilot.press("right_square_bracket")
        assert screen.state.active == 1 and screen.state.view.run.name == "lr-high"
        await pilot.press("c")
        assert app.screen.__class__.__name__ == "CompareScreen"
        from overmem_tui.screens.compare import compare_plots

        ppl, acc, strips = compare_plots(screen.state)
        assert [s.name for s in ppl.series] == ["paper_run (lr 0.0002)", "lr-high (lr 0.0002)"]
        assert "purple from ep7" in strips[0].plain
        await pilot.press("escape")
        assert app.screen is screen


async def test_export_key(paper_run, tmp_path):
    (paper_run / "checkpoints" / "ep5" / "adapter_model.safetensors").write_bytes(b"w")
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        await pilot.press("a", "x")
        assert app.screen.__class__.__name__ == "ExportScreen"
        field = app.screen.query_one("#folder")
        field.value = str(tmp_path / "chosen")
        await pilot.press("enter")
        await settle(pilot, lambda: (tmp_path / "chosen" / "adapter_model.safetensors").exists())
    assert json.loads((paper_run / "selection.json").read_text())["checkpoint"] == "ep5"


async def test_merge_key_runs_the_real_merge(evaluated_run):
    """On a copy of the session's trained and evaluated tiny LoRA run (conftest.py)."""
    from overmem.rundir import load_run

    lora_run = evaluated_run
    app = make_app([lora_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        screen = app.watch_screen
        await pilot.press("m")  # nothing marked: a warning, no dialog
        assert app.screen is screen
        await pilot.press("down", "space", "down", "space")
        assert screen.state.marked == {"ep1", "ep2"}
        await pilot.press("m")
        assert app.screen.__class__.__name__ == "MergeScreen"
        assert app.screen.query_one("#weights").value == "0.5,0.5"
        await pilot.press("enter")
        await settle(pilot, lambda: "merge-ep1+ep2" in table_names(app), timeout=30)
    merged = load_run(lora_run).checkpoint("merge-ep1+ep2")
    assert merged.kind == "merge" and (merged.path / "adapter_model.safetensors").is_file()


async def test_probe_view_key(paper_run):
    from overmem.rundir import Metric, RunDir

    RunDir(paper_run).append([Metric("ep5", "mia", "auroc_loss", 0.55, "", 1000, probe="mia"),
                              Metric("ep10", "mia", "auroc_loss", 0.72, "", 1000, probe="mia")])
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        screen = app.watch_screen
        screen.state = type(screen.state)(**{**screen.state.__dict__, "marked": frozenset({"ep5", "ep10"})})
        await pilot.press("v")
        assert app.screen.__class__.__name__ == "ProbeScreen"
        assert app.screen.names == ["ep10", "ep5"]


GOLDEN = __import__("tests.conftest", fromlist=["DATA"]).DATA / "paper_run"


def _snapshot_app():
    return make_app([GOLDEN], poll_interval=0.05, clock=FIXED_CLOCK)


async def _wait_loaded(pilot):
    await settle(pilot, lambda: loaded(pilot.app))
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (160, 48)])
def test_snapshot_main_screen(snap_compare, size):
    assert snap_compare(_snapshot_app(), terminal_size=size, run_before=_wait_loaded)


def test_snapshot_help_screen(snap_compare):
    async def open_help(pilot):
        await _wait_loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(_snapshot_app(), terminal_size=(100, 32), run_before=open_help)


async def test_wait_shows_waiting_until_the_run_appears(paper_run, tmp_path):
    target = tmp_path / "later"
    app = make_app([target], poll_interval=0.05, clock=FIXED_CLOCK, wait=True)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.watch_screen
        await settle(pilot, lambda: "waiting for" in str(screen.query_one("#status").render()))
        shutil.copytree(paper_run, target)
        await settle(pilot, lambda: loaded(app))
        assert screen.state.summary.advice.recommended == "ep5"
