"""The onset forecast and the stop rule: pure functions, on hand-made series and the paper's run."""

from __future__ import annotations

import math
import shutil

import pytest

from overmem.errors import UsageError
from overmem.forecast import forecast_onset, schedule_from_logs
from overmem.rundir import RunDir, load_run
from overmem.rundir.lines import Stop
from overmem.stopping import check_stop_rule, pending_request, rule_reason, stop_reason
from overmem.summary import summarize, summary_json


def _series(ratios, start=3):
    names = [f"ep{start + i}" for i in range(len(ratios))]
    return names, [float(start + i) for i in range(len(ratios))], ratios


def test_no_forecast_before_three_checkpoints_after_the_minimum_nor_once_purple():
    names, xs, ratios = _series([1.0, 1.05, 1.2])
    assert forecast_onset(names, xs, ratios, 1.5, 0, purple=False) is None
    names, xs, ratios = _series([1.0, 1.05, 1.2, 1.4])
    assert forecast_onset(names, xs, ratios, 1.5, 0, purple=True) is None
    assert forecast_onset(names, xs, ratios, 1.5, 0, purple=False) is not None


def test_a_steady_exponential_rise_is_forecast_where_it_crosses():
    # ratio - 1 doubles every epoch from 0.05 at ep4: 0.4 at ep7, so 0.5 is crossed after it: ep8
    names, xs, ratios = _series([1.0, 1.05, 1.1, 1.2, 1.4])
    f = forecast_onset(names, xs, ratios, 1.5, 0, purple=False)
    assert 7.0 < f.onset < 7.5  # between ep7 (0.4) and ep8 (0.8): the first checkpoint after it is ep8
    assert f.low <= f.onset <= f.high
    assert f.basis == tuple(names) and f.describe().startswith("purple expected at ep")


def test_a_flat_or_falling_series_expects_no_onset():
    names, xs, ratios = _series([1.0, 1.0, 1.0, 1.0])
    f = forecast_onset(names, xs, ratios, 1.5, 0, purple=False)
    assert f.onset is None and f.high is None and "not rising" in f.describe()


def _linear_decay(epochs: int, steps_per_epoch: int = 10, lr: float = 1e-3):
    """Training records of a linear schedule from ``lr`` to 0 over ``epochs``, up to epoch 8."""
    total = epochs * steps_per_epoch
    logs = [(s, s / steps_per_epoch, lr * (1 - s / total)) for s in range(5, 8 * steps_per_epoch + 1, 5)]
    return schedule_from_logs(logs, total)


def test_a_decaying_schedule_moves_the_onset_later_or_past_the_end():
    names, xs, ratios = _series([1.0, 1.03, 1.06, 1.1, 1.15, 1.2])  # ep3..ep8, steady in epochs
    plain = forecast_onset(names, xs, ratios, 1.5, 0, purple=False)
    long = forecast_onset(names, xs, ratios, 1.5, 0, purple=False, schedule=_linear_decay(40))
    short = forecast_onset(names, xs, ratios, 1.5, 0, purple=False, schedule=_linear_decay(10))
    assert plain.onset < long.onset < 40  # the rise slows as the learning rate decays
    assert short.onset == math.inf and not short.to_json()["before_end"]
    assert "before the training ends (ep10)" in short.describe()
    assert _linear_decay(10).epoch_of(_linear_decay(10).at(10) * 1.01) == math.inf


def test_noisy_early_points_widen_the_interval():
    names, xs, ratios = _series([1.0, 1.08, 1.02, 1.12, 1.06])
    wide = forecast_onset(names, xs, ratios, 1.5, 0, purple=False)
    names, xs, ratios = _series([1.0, 1.03, 1.06, 1.09, 1.12])
    steady = forecast_onset(names, xs, ratios, 1.5, 0, purple=False)
    assert (wide.high or math.inf) - wide.low > steady.high - steady.low


def test_the_paper_series_before_its_onset_forecasts_it(paper_run):
    for name in ("ep7", "ep8", "ep9", "ep10"):
        shutil.rmtree(paper_run / "checkpoints" / name)
    summary = summarize(load_run(paper_run))
    assert summary.advice.phases.onset is None
    f = summary.forecast
    assert math.ceil(f.low) <= 7 <= math.ceil(f.high)  # the full run turns purple at ep7
    assert summary_json(summary)["forecast"] == f.to_json()
    assert set(f.to_json()) == {"onset_epoch", "low", "high", "from", "method", "before_end"}
    assert f.to_json()["before_end"] is True
    assert f.to_json()["from"] == ["ep3", "ep4", "ep5", "ep6"]


def test_a_purple_run_has_no_forecast(paper_run):
    summary = summarize(load_run(paper_run))
    assert summary.advice.phases.onset == "ep7" and summary.forecast is None
    assert summary_json(summary)["forecast"] is None


def test_the_stop_rule_needs_patience_purple_checkpoints_in_a_row(paper_run):
    summary = summarize(load_run(paper_run))  # ep7-ep10 purple
    assert "ep9, ep10" in rule_reason(summary, "purple", 2)
    assert rule_reason(summary, "purple", 5) is None  # only four purple checkpoints
    assert rule_reason(summary, "overfit", 2) is None
    assert rule_reason(summary, "none", 1) is None
    # after a stop at ep9, only what came after counts: one purple checkpoint is not two
    RunDir(paper_run).append([Stop("rule", "rule", done=True, checkpoint="ep9", step=9)])
    summary = summarize(load_run(paper_run))
    assert rule_reason(summary, "purple", 2) is None and rule_reason(summary, "purple", 1) is not None


def test_a_request_is_pending_until_the_trainer_stops_for_it(paper_run):
    rd = RunDir(paper_run)
    assert pending_request(load_run(paper_run)) is None
    rd.append([Stop("asked from overmem watch")])
    run = load_run(paper_run)
    assert pending_request(run).reason == "asked from overmem watch"
    assert stop_reason(summarize(run), "none", 2) == ("user", "asked from overmem watch")
    rd.append([Stop("asked from overmem watch", done=True, checkpoint="ep10", step=10)])
    assert pending_request(load_run(paper_run)) is None


@pytest.mark.parametrize("stop_at, patience", [("sometimes", 2), ("purple", 0), ("purple", -1), ("purple", True)])
def test_bad_stop_rules_are_one_line(stop_at, patience):
    with pytest.raises(UsageError):
        check_stop_rule(stop_at, patience)
