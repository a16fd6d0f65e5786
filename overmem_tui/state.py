"""What the watch screen shows, as one frozen snapshot, and pure builders over it.

The screen holds exactly one WatchState; every change (new records, a key)
replaces it. A run's view (its summary, claims) is computed by the poll worker,
off the UI thread; builders here turn the state into plots and texts and touch
no widget and no file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from overmem.phases import Thresholds
from overmem.rundir.records import Run
from overmem.summary import Summary, summarize
from overmem.table import MERGE_MARK, RECOMMENDED_MARK, phase_of, trajectory_rows
from overmem.values import x_of
from overmem.units import pct
from overmem_tui.plotting import Band, Plot, Series, series_style


@dataclass(frozen=True)
class RunView:
    run: Run
    summary: Summary | None
    error: str | None = None
    claims: tuple[str, ...] = ()  # checkpoints an evaluator works on now
    split: str | None = None  # the split asked for when the view was computed (None: the default)
    thresholds: Thresholds = Thresholds()  # the thresholds it was computed with


@dataclass(frozen=True)
class WatchState:
    views: tuple[RunView | None, ...]
    active: int = 0
    split: str | None = None
    thresholds: Thresholds = Thresholds()
    acc_metric: str | None = None  # --acc-metric: a Trainer metric that is accuracy (None: the run's choice)
    log_scale: bool = False
    marked: frozenset = field(default_factory=frozenset)
    sort: str = "epoch"

    @property
    def view(self) -> RunView | None:
        return self.views[self.active] if self.views else None

    @property
    def summary(self) -> Summary | None:
        view = self.view
        return view.summary if view else None

    def with_view(self, index: int, view: "RunView") -> "WatchState":
        """The state with run ``index`` shown as ``view``. A view computed (off the UI thread)
        with another split or thresholds than this state's, because a key changed them
        meanwhile, is recomputed from its run with this state's: a late view never undoes a key."""
        if (view.split, view.thresholds) != (self.split_for(index), self.thresholds):
            view = make_view(view.run, self.split_for(index), self.thresholds, view.claims, self.acc_metric)
        views = list(self.views)
        views[index] = view
        return replace(self, views=tuple(views))

    def recompute(self, **changes) -> "WatchState":
        """Apply changes (split, thresholds...) and recompute every summary from its run."""
        state = replace(self, **changes)
        views = tuple(
            make_view(v.run, state.split if i == state.active else None, state.thresholds, v.claims,
                      state.acc_metric) if v else None
            for i, v in enumerate(state.views)
        )
        return replace(state, views=views)

    def split_for(self, index: int) -> str | None:
        return self.split if index == self.active else None


def make_view(run: Run, split: str | None, thresholds: Thresholds, claims: tuple[str, ...] = (),
              acc_metric: str | None = None) -> RunView:
    """Everything the screen shows of one run; never raises (an error becomes part of the view)."""
    basis = {"claims": claims, "split": split, "thresholds": thresholds}
    try:
        return RunView(run, summarize(run, split, thresholds, acc_metric=acc_metric), **basis)
    except Exception as exc:  # a split that vanished, a bug: shown in the status line, the screen stays
        try:
            return RunView(run, summarize(run, None, thresholds, acc_metric="acc"), error=str(exc), **basis)
        except Exception as exc2:  # noqa: BLE001 - same reason
            return RunView(run, None, error=f"{type(exc2).__name__}: {exc2}", **basis)


def plots(summary: Summary, log_scale: bool, cursor: str | None = None) -> tuple[Plot, Plot]:
    """The perplexity and the accuracy panels over the trajectory (merges are not on it)."""
    rows = trajectory_rows(summary)
    uses_steps = all(r.checkpoint.epoch is None for r in rows) and bool(rows)
    advice = summary.advice
    bands = tuple(Band(x_of(r), phase_of(summary, r.name)) for r in rows)
    markers = []
    for r in rows:
        if r.name == advice.recommended:
            markers.append((x_of(r), RECOMMENDED_MARK))
        elif advice.merge and r.name in advice.merge:
            markers.append((x_of(r), MERGE_MARK))
    cursor_x = next((x_of(r) for r in rows if r.name == cursor), None)
    ppl_series, acc_series = [], []
    for i, split in enumerate(summary.splits):
        style, mark = series_style(split, i)
        ppl = tuple((x_of(r), r.get(split).ppl) for r in rows if r.get(split).ppl is not None)
        acc = tuple((x_of(r), pct(r.get(split).acc)) for r in rows if r.get(split).acc is not None)
        if ppl:
            ppl_series.append(Series(split, ppl, style, mark))
        if acc:
            acc_series.append(Series(split, acc, style, mark))
    agg = summary.ppl_label
    extra = {"x_label": "step" if uses_steps else "epoch"}
    ahead = summary.forecast
    expected = (ahead.low, ahead.high if ahead.high is not None else ahead.low) if ahead and ahead.onset else None
    # the base model's ppl is often several times the rest; scaling to it would flatten the
    # rise that matters, so the range follows the finetuned checkpoints (the base sits on the edge)
    tuned = [y for s in ppl_series for x, y in s.points if x > min(x0 for x0, _ in s.points)]
    ppl_range = (min(tuned) * 0.99, max(tuned) * 1.01) if len(tuned) >= 2 else None
    ppl_plot = Plot(f"perplexity ({agg}{', log scale' if log_scale else ''})", tuple(ppl_series), bands,
                    log_y=log_scale, markers=tuple(markers), cursor_x=cursor_x, y_format="{:.4g}",
                    y_range=ppl_range, extra=extra, forecast=expected)
    acc_plot = Plot("accuracy %", tuple(acc_series), bands, markers=tuple(markers), cursor_x=cursor_x,
                    y_format="{:.0f}", y_range=(0.0, 100.0), extra=extra, forecast=expected)
    return ppl_plot, acc_plot


def age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def status_line(view: RunView | None, now: float | None = None) -> str:
    """Training and evaluation progress, and the state of the files."""
    if view is None:
        return "loading..."
    now = now or time.time()
    run = view.run
    parts = [f"{run.name} [{run.status or '?'}]"]
    if run.train_logs:
        last = run.train_logs[-1]
        total = f"/{last.total_steps}" if last.total_steps else ""
        parts.append(f"train step {last.step}{total} epoch {last.epoch:.2f} loss {last.loss:.4f} "
                     f"({age(now - last.time)} ago)" if last.time else
                     f"train step {last.step}{total} epoch {last.epoch:.2f} loss {last.loss:.4f}")
    if view.summary:
        saved = [r for r in view.summary.rows if r.checkpoint.path is not None or r.checkpoint.is_base]
        done = [r for r in saved if any(v.ppl is not None or v.acc is not None for v in r.splits.values())]
        parts.append(f"evaluated {len(done)}/{len(saved)} checkpoints")
    if view.claims:
        parts.append(f"evaluating {', '.join(view.claims)}")
    if view.summary and view.summary.forecast:
        parts.append(view.summary.forecast.describe())
    if run.torn_tail:
        parts.append("metrics.jsonl: waiting for a line to complete")
    if view.error:
        parts.append(f"! {view.error}")
    elif run.problems:
        parts.append(f"! {run.problems[0]}")
    elif view.summary and view.summary.advice.warnings:
        parts.append(f"! {view.summary.advice.warnings[0]}")
    return "  ·  ".join(parts)
