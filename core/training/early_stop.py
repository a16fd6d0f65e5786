"""Stopping a training early, through its run: requests, and the trainer's decisions.

The run directory is the channel: evaluations (in process, or by ``overmem eval --follow``
in another process) and stop requests (watch's key) are records in it, and so is the
stop the trainer carries out, with its reason (overmem.stopping has the rule).
"""

from __future__ import annotations

import time

from overmem.errors import OvermemError, UsageError
from overmem.rundir import RunDir, load_run
from overmem.rundir.lines import Stop
from overmem.rundir.records import STATUS_RUNNING, STATUS_STOPPED
from overmem.rundir.sources import SOURCE_OVERMEM

REQUESTED = "asked from overmem watch"


def request_stop(run_path, reason: str = REQUESTED) -> None:
    """Ask the training of the run at ``run_path`` to stop at its next checkpoint (a Stop record it
    reads there); UsageError for a run that no overmem trainer or callback is training now."""
    run = load_run(run_path)
    if run.source != SOURCE_OVERMEM:
        raise UsageError(f"{run.path} is a Trainer output folder: its trainer does not read overmem's records "
                         "(train with OvermemCallback(stop_at=...) to stop it from here)")
    if run.status != STATUS_RUNNING:
        raise UsageError(f"{run.path} is not training (its status is {run.status}); nothing to stop")
    RunDir(run.path).append([Stop(reason, "user", time=time.time())])


class EarlyStop:
    """Decides, on the main process, whether training stops after a checkpoint."""

    def __init__(self, rundir: RunDir, stop_at: str, patience: int, note) -> None:
        self.rundir = rundir
        self.stop_at = stop_at
        self.patience = patience
        self.note = note  # (text) -> None: says something to the user
        self._unreadable = False

    def after(self, checkpoint: str, step: int) -> str | None:
        """The reason to stop after ``checkpoint`` (recorded in the run with the run's status
        set to stopped), or None to go on. A run it cannot read keeps training (said once)."""
        from overmem.stopping import stop_reason
        from overmem.summary import summarize

        try:
            decision = stop_reason(summarize(load_run(self.rundir.path)), self.stop_at, self.patience)
        except (OvermemError, OSError, ValueError) as exc:
            if not self._unreadable:
                self._unreadable = True
                self.note(f"cannot read the run to decide whether to stop ({exc}); training goes on")
            return None
        if decision is None:
            return None
        by, reason = decision
        self.rundir.append([Stop(reason, by, done=True, checkpoint=checkpoint, step=step, time=time.time())])
        self.rundir.set_status(STATUS_STOPPED)
        return reason
