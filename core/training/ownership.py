"""One trainer per run: the training lease, and what a trainer that died left behind.

The main process holds the run's lease (a claim with a heartbeat, claims.py) for the
whole training, so a second ``overmem train --out RUN [--resume]`` beside a running
one is refused with the holder's name instead of both writing the same checkpoints.
On ``--resume`` the half-written folders of processes that died are removed, once the saved
state is found good.
"""

from __future__ import annotations

from typing import Callable

from overmem.errors import OutputExists, RunNotFound, UsageError
from overmem.rundir import RunDir
from overmem.rundir.claims import Claim
from overmem.rundir.outputs import check_new_run


def take_run(rundir: RunDir, resume: bool) -> Claim:
    """The training lease on ``rundir`` (a new run, or the one to resume), or UsageError
    naming the process that holds it."""
    if not resume:
        check_new_run(rundir.path)
        if rundir.exists():
            raise OutputExists(f"{rundir.path} already holds a run (use --resume or another --out)")
    elif not rundir.exists():
        raise RunNotFound(f"{rundir.path} holds no run to resume")
    lease = rundir.try_lease()
    if lease is None:
        raise UsageError(f"{rundir.path} is being trained by another process ({rundir.lease_holder()}); wait "
                         "for it to end or stop it first")
    return lease


def clean_after_crash(rundir: RunDir, note: Callable[[str], None]) -> None:
    """Remove what processes that died left half-written (call holding the lease, once the
    saved state was found good)."""
    for name in rundir.remove_stale_temporaries():
        note(f"removed {name}, left half-written by a process that died")
