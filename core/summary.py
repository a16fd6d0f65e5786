"""One view of a run for every front end: its table, the split in force and the advice."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from overmem.advice import Advice, advise
from overmem.errors import CorruptRun, EmptyRun, UnknownMetric, UnknownSplit
from overmem.values import (AGGREGATE_NAMES, OWN_ACC, Aggregate, CheckpointValues, accuracy_series,
                            available_splits, build_rows, trainer_values, x_of)
from overmem.forecast import Forecast, forecast_onset, schedule_from_logs
from overmem.phases import Point, Thresholds, log_ratio
from overmem.rundir.lines import TRAINER_METRIC, canonical_split
from overmem.rundir.records import KIND_BASE, Run


@dataclass(frozen=True)
class Summary:
    run: Run
    rows: tuple[CheckpointValues, ...]
    splits: tuple[str, ...]
    advice: Advice
    aggregates: dict[str, Aggregate] = field(default_factory=dict)  # split -> the ppl aggregate it uses
    forecast: Forecast | None = None  # when the driving split is expected to turn purple
    accuracy: dict[str, str] = field(default_factory=dict)  # split -> the Trainer metric standing in for acc

    @property
    def acc_metric(self) -> str:
        """The records' metric that is accuracy on the split in force: ``acc`` (overmem's own
        generation accuracy) or the Trainer metric the user vouched for (``trainer/accuracy``)."""
        return self.accuracy.get(self.split or "", OWN_ACC)

    @property
    def ppl_label(self) -> str:
        """What the ppl numbers of the split in force are (e.g. "mean of per-sample ppl")."""
        agg = self.aggregates.get(self.split or "")
        return AGGREGATE_NAMES.get(agg.name, agg.name) if agg else "ppl"

    @property
    def split(self) -> str | None:
        return self.advice.split


def choose_split(splits: tuple[str, ...], requested: str | None) -> str | None:
    """The requested split (which must exist), else val, else test, else the first."""
    if requested:
        name = canonical_split(requested)
        if name not in splits:
            have = ", ".join(splits) if splits else "none"
            raise UnknownSplit(f"split {requested!r} has no metrics in this run (splits: {have})")
        return name
    for default in ("val", "test"):
        if default in splits:
            return default
    return splits[0] if splits else None


def points_for(rows: tuple[CheckpointValues, ...], split: str | None) -> list[Point]:
    points = []
    for row in rows:
        values = row.get(split) if split else None
        points.append(
            Point(
                name=row.name,
                ppl=values.ppl if values else None,
                acc=values.acc if values else None,
                n=values.n if values else None,
                grades=values.grades if values else None,
                looks=values.looks if values else None,
                on_trajectory=row.checkpoint.on_trajectory,
                mergeable=row.checkpoint.kind != KIND_BASE and row.checkpoint.path is not None,
                base=row.checkpoint.kind == KIND_BASE,
                parents=row.checkpoint.parents,
            )
        )
    return points


def summarize(
    run: Run,
    split: str | None = None,
    thresholds: Thresholds = Thresholds(),
    ppl_aggregate: str = "mean",
    acc_metric: str | None = None,
) -> Summary:
    """``acc_metric``: a Trainer-logged metric that is generation accuracy (overmem.values.
    accuracy_series); default the one the run records (``eval --acc-metric``), else overmem's."""
    if acc_metric is not None:
        accuracy = accuracy_series(run, acc_metric)
        rows, aggregates = build_rows(run, ppl_aggregate, accuracy)
    else:
        try:
            accuracy = accuracy_series(run, recorded_acc_metric(run))
            rows, aggregates = build_rows(run, ppl_aggregate, accuracy)
        except UnknownMetric as exc:  # the run's own record: a corrupt run, not a bad option
            raise CorruptRun(f"run.json: data.acc_metric (recorded by eval --acc-metric): {exc}; "
                             "--acc-metric acc ignores it") from None
    splits = available_splits(rows)
    chosen = choose_split(splits, split)
    advice = advise(points_for(rows, chosen), chosen, thresholds.validate())
    notes = _notes(chosen, splits, aggregates)
    if notes:
        advice = replace(advice, warnings=tuple(notes) + advice.warnings)
    return Summary(run=run, rows=rows, splits=splits, advice=advice, aggregates=aggregates,
                   forecast=onset_forecast(run, rows, advice), accuracy=accuracy)


def recorded_acc_metric(run: Run) -> str | None:
    """The accuracy metric ``eval --acc-metric`` recorded in the run (the overlay's run.json)."""
    name = run.info.data.get("acc_metric") if run.info else None
    if name is not None and not isinstance(name, str):
        raise CorruptRun(f"run.json: data.acc_metric {str(name)[:60]!r} is not a metric name")
    return name


def onset_forecast(run: Run, rows: tuple[CheckpointValues, ...], advice: Advice) -> Forecast | None:
    """The onset forecast on the driving split's trajectory (overmem.forecast), or None."""
    phases, split = advice.phases, advice.split
    if split is None or phases.min_ppl is None:
        return None
    trajectory = [r for r in rows if r.checkpoint.on_trajectory and x_of(r) is not None
                  and r.get(split).ppl is not None]
    names = [r.name for r in trajectory]
    min_index = names.index(phases.min_name) if phases.min_name in names else -1
    logs = run.train_logs
    schedule = schedule_from_logs([(t.step, t.epoch, t.lr) for t in logs], logs[-1].total_steps) if logs else None
    return forecast_onset(names, [x_of(r) for r in trajectory],
                          [log_ratio(r.get(split).ppl, phases.min_ppl) for r in trajectory],
                          advice.thresholds.ppl_factor, min_index, purple=phases.onset is not None,
                          schedule=schedule)


def _notes(chosen: str | None, splits: tuple[str, ...], aggregates: dict) -> list[str]:
    """Warnings about the data the decision rests on (not about the checkpoints)."""
    out = []
    if chosen and chosen != "val" and "val" not in splits:
        out.append(f"no validation split: phases and the recommendation use {chosen}, so selecting a checkpoint "
                   f"on it leaks {chosen} into the choice (define one: overmem eval RUN --split-file val=FILE)")
    agg = aggregates.get(chosen or "")
    if agg and agg.missing:
        names = ", ".join(agg.missing[:6]) + (f" and {len(agg.missing) - 6} more" if len(agg.missing) > 6 else "")
        out.append(f"{chosen} ppl is compared as {AGGREGATE_NAMES.get(agg.name, agg.name)}; {names} "
                   f"{'has' if len(agg.missing) == 1 else 'have'} only another kind of ppl and stay unclassified "
                   "until overmem eval scores them")
    return out


def require_metrics(summary: Summary) -> Summary:
    """Raise EmptyRun when there is nothing to decide on."""
    if not summary.splits:
        what = "no checkpoints" if not summary.run.checkpoints else "no evaluated metrics"
        problems = summary.run.problems
        why = (f"; {len(problems)} record(s) could not be used, first: {problems[0]}" if problems else
               f" yet (run: overmem eval {summary.run.path})")
        raise EmptyRun(f"{summary.run.path} has {what}{why}")
    return summary


def summary_json(summary: Summary) -> dict:
    """The ``overmem recommend --json`` object."""
    advice = summary.advice
    trainer: dict = {}  # a Trainer's own eval numbers under their own names (never accuracy)
    for (checkpoint, split, metric), value in trainer_values(summary.run).items():
        trainer.setdefault(checkpoint, {}).setdefault(split, {})[metric[len(TRAINER_METRIC):]] = value
    checkpoints = []
    for row in summary.rows:
        verdict = advice.phases.of(row.name)
        checkpoints.append(
            {
                "name": row.name,
                "epoch": row.checkpoint.epoch,
                "step": row.checkpoint.step,
                "kind": row.checkpoint.kind,
                "phase": verdict.phase.value if verdict else None,
                "reason": verdict.reason if verdict else None,
                "metrics": {
                    split: {"ppl": v.ppl, "acc": v.acc, "n": v.n, "ppl_aggregate": v.ppl_aggregate,
                            "looks": v.looks}  # looks: the adaptive look the accuracy is at (None: full)
                    for split, v in row.splits.items()
                },
                "trainer_metrics": trainer.get(row.name, {}),
            }
        )
    return {
        "run": str(summary.run.path),
        "source": summary.run.source,
        "status": summary.run.status,
        "split": advice.split,
        "splits": list(summary.splits),
        "ppl_aggregates": {split: agg.name for split, agg in summary.aggregates.items()},
        "acc_metric": summary.acc_metric,  # what drove the phases: "acc" (overmem's) or "trainer/<name>"
        "acc_metrics": {split: summary.accuracy.get(split, OWN_ACC) for split in summary.splits},
        "thresholds": advice.thresholds.to_json(),
        "checkpoints": checkpoints,
        "recommended": advice.recommended,
        "merge": list(advice.merge) if advice.merge else None,
        "onset": advice.phases.onset,
        "forecast": summary.forecast.to_json() if summary.forecast else None,
        "reasons": list(advice.reasons),
        "naive": {rule: name for rule, name in advice.naive},
        "warnings": list(advice.warnings),
        "problems": list(summary.run.problems),
    }
