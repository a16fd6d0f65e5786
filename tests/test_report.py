"""The report figure on the golden run (fast; the demo test covers a real run)."""

from __future__ import annotations

import struct

from overmem.report import _ppl_limits, figure_bytes
from overmem.rundir import load_run
from overmem.summary import summarize
from tests.conftest import DATA


def test_epoch_zero_far_above_the_trained_curve_is_left_off_the_scale():
    low, high = _ppl_limits([3.13, 1.21, 1.15, 1.17, 1.35])
    assert low < 1.15 and 1.35 < high < 1.4  # the rise from 1.15 to 1.35 fills the panel
    low, high = _ppl_limits([9.0, 3.6, 3.2, 3.1, 14.0])
    assert high > 14.0 and low < 3.1  # nothing is far above a large rise: all shown
    assert _ppl_limits([2.0]) == (1.9, 2.1)


def test_figure_has_one_panel_per_split_at_the_documented_size():
    data = figure_bytes(summarize(load_run(DATA / "paper_run")))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1000, 960)
