"""A view the poll worker computed before a key press never undoes the key.

The worker computes a run's view off the UI thread with the split and thresholds it
read; a key (band, factor, split) recomputes on the UI thread. The worker's late
message must not bring the old thresholds back.
"""

from __future__ import annotations

from dataclasses import replace

from overmem.phases import Thresholds
from overmem.rundir import load_run
from overmem_tui.app import make_app
from overmem_tui.messages import RunUpdated
from overmem_tui.state import WatchState, make_view
from tests.test_tui import FIXED_CLOCK, loaded, settle


def test_a_late_view_is_recomputed_with_the_state_in_force(paper_run):
    run = load_run(paper_run)
    narrow = Thresholds(band=1.0)
    before = make_view(run, None, Thresholds())  # what the worker computed before the key
    assert before.summary.advice.recommended == "ep5"
    state = WatchState(views=(before,)).recompute(thresholds=narrow)  # the key
    assert state.view.summary.advice.recommended == "ep3"
    late = state.with_view(0, before)
    assert late.view.thresholds == narrow and late.view.summary.advice.recommended == "ep3"
    assert late.view.summary.advice.thresholds == narrow
    # a view computed with the state's own basis is taken as it is
    current = make_view(run, None, narrow)
    assert state.with_view(0, current).view is current
    # the split is part of the basis too
    on_test = state.recompute(split="test")
    assert on_test.with_view(0, make_view(run, None, narrow)).view.summary.split == "test"


async def test_a_key_press_survives_a_view_in_flight(paper_run):
    app = make_app([paper_run], poll_interval=0.05, clock=FIXED_CLOCK)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: loaded(app))
        screen = app.watch_screen
        stale = screen.state.view  # computed by the worker with the default band
        for _ in range(5):
            await pilot.press("B")  # band 1.25 -> 1.0
        assert screen.state.summary.advice.recommended == "ep3"
        screen.post_message(RunUpdated(0, replace(stale, claims=("ep9",))))  # the worker's message arrives late
        await settle(pilot, lambda: screen.state.view.claims == ("ep9",))
        assert screen.state.thresholds.band == 1.0
        assert screen.state.summary.advice.recommended == "ep3"
