"""One progress protocol for every long job (train, eval, probe, merge): typed events.

A job takes ``on_event: Callable[[Event], None]`` and reports what happens as one of
the classes below; a front end (the CLI's progress bars, the watch screen) matches
on the class, never on a string. Every event names its ``job``; ``subject`` is what
the event is about (a checkpoint, or the tensor a merge writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TRAIN, EVAL, PROBE, MERGE = "train", "eval", "probe", "merge"


@dataclass(frozen=True)
class Event:
    job: str
    subject: str = ""


@dataclass(frozen=True)
class Started(Event):
    """Work on ``subject`` begins (``done`` of ``total`` units already behind it, on resume)."""

    done: int = 0
    total: int | None = None
    text: str = ""  # how it runs (a backend, the training plan)


@dataclass(frozen=True)
class Advanced(Event):
    """``done`` of ``total`` units of one part of the work (rows of a split, tensors of a merge)."""

    done: int = 0
    total: int = 0
    split: str = ""
    part: str = ""  # eval: ppl | gen


@dataclass(frozen=True)
class Stepped(Event):
    """A training optimizer step, with what the step measured."""

    done: int = 0  # optimizer steps so far
    total: int = 0
    epoch: float = 0.0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None


@dataclass(frozen=True)
class Saved(Event):
    """Training saved checkpoint ``subject`` at ``step``."""

    step: int = 0
    epoch: float = 0.0


@dataclass(frozen=True)
class Note(Event):
    """Something the user should read (the work goes on)."""

    text: str = ""
    split: str = ""


@dataclass(frozen=True)
class Skipped(Event):
    """``subject`` is left alone (another evaluator holds it)."""

    text: str = ""


@dataclass(frozen=True)
class Failed(Event):
    """``subject`` could not be done; the job goes on with the others."""

    text: str = ""


@dataclass(frozen=True)
class Finished(Event):
    """Work on ``subject`` (or the whole job, when empty) is done."""

    done: int = 0
    total: int | None = None


Listener = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The listener of a job nobody watches."""


def counter(on_event: Listener, job: str, subject: str, total: int, **where) -> Callable[[int], None]:
    """A callback that adds n finished units and reports ``Advanced`` (reported at 0 first)."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        on_event(Advanced(job, subject, done, total, **where))

    on_event(Advanced(job, subject, 0, total, **where))
    return advance
