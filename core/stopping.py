"""When a training should stop itself: the stop rule and stop requests (pure).

``train --stop-at purple --patience N`` (and ``OvermemCallback(stop_at=..., patience=...)``)
stop a training at the next checkpoint boundary once the advice has called the last N
evaluated checkpoints of the trajectory purple or overfit (``--stop-at overfit``: overfit
only) on the driving split. Only checkpoints after the last stop count, so a stopped run
that is resumed on purpose goes on for at least N more checkpoints. A stop request
(watch's key) stops it at its next boundary whatever the rule says; a request made
before the trainer stopped for it, or before it was restarted, is still pending: it is a
record in the run.
"""

from __future__ import annotations

from overmem.errors import UsageError
from overmem.phases import Phase
from overmem.rundir.lines import Stop
from overmem.rundir.records import Run
from overmem.summary import Summary

STOP_AT = ("none", "purple", "overfit")
_STOPPING = {"purple": (Phase.PURPLE, Phase.OVERFIT), "overfit": (Phase.OVERFIT,)}
DEFAULT_PATIENCE = 2


def check_stop_rule(stop_at: str, patience: int) -> None:
    """UsageError for a stop rule that is not one."""
    if stop_at not in STOP_AT:
        raise UsageError(f"--stop-at must be one of {', '.join(STOP_AT)}, got {stop_at!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise UsageError(f"--patience must be a whole number of checkpoints, 1 or more, got {patience!r}")


def last_stop(run: Run) -> Stop | None:
    """The latest stop the trainer carried out, if any."""
    return next((s for s in reversed(run.stops) if s.done), None)


def pending_request(run: Run) -> Stop | None:
    """A stop request not yet carried out: the latest request after the latest stop."""
    for stop in reversed(run.stops):
        if stop.done:
            return None
        return stop
    return None


def rule_reason(summary: Summary, stop_at: str, patience: int) -> str | None:
    """Why the rule stops the training now, or None: the last ``patience`` evaluated checkpoints
    of the trajectory after the last stop are all in a stopping phase."""
    if stop_at == "none" or summary.split is None:
        return None
    stopped_at = last_stop(summary.run)
    rows = [r for r in summary.rows if r.checkpoint.trained]
    if stopped_at is not None and stopped_at.checkpoint is not None:
        names = [r.name for r in rows]
        if stopped_at.checkpoint in names:
            rows = rows[names.index(stopped_at.checkpoint) + 1:]
    phases = summary.advice.phases
    evaluated = [(r.name, phases.of(r.name)) for r in rows if r.get(summary.split).ppl is not None]
    evaluated = [(name, v.phase) for name, v in evaluated if v is not None and v.phase is not Phase.UNKNOWN]
    last = evaluated[-patience:]
    if len(last) < patience or any(phase not in _STOPPING[stop_at] for _, phase in last):
        return None
    names = ", ".join(name for name, _ in last)
    kept = summary.advice.recommended
    return (f"{patience} consecutive evaluated checkpoint(s) {stop_at if stop_at == 'overfit' else 'over-memorized'} "
            f"on {summary.split} ({names})" + (f"; the recommended {kept} is saved" if kept else ""))


def stop_reason(summary: Summary, stop_at: str, patience: int) -> tuple[str, str] | None:
    """(who, why) when the training should stop at this boundary: a pending request first."""
    request = pending_request(summary.run)
    if request is not None:
        return request.by, request.reason
    reason = rule_reason(summary, stop_at, patience)
    return ("rule", reason) if reason else None
