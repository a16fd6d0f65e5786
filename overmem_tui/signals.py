"""After a command's result is on disk, an interrupt can no longer undo it.

A command calls ``committed()`` once its job is done and written (a merge registered, an
export renamed into place); an interrupt after that, while it prints its success line,
ends the process with exit 0 instead of 130. A flag, not a signal handler, so nothing
global outlives the command (a test calling commands in-process keeps its Ctrl-C).
"""

from __future__ import annotations

_state = {"committed": False}


def committed() -> None:
    """The job is done and its result written."""
    _state["committed"] = True


def reset() -> None:
    """A new command starts: nothing of it is committed yet."""
    _state["committed"] = False


def is_committed() -> bool:
    return _state["committed"]
