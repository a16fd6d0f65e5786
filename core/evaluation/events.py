"""What an evaluator tells its front ends: start, progress, done, skip, note, failed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalEvent:
    kind: str  # start | progress | done | skip | note | failed (this checkpoint only; the others go on)
    checkpoint: str = ""
    split: str = ""
    part: str = ""  # ppl | gen
    done: int = 0
    total: int = 0
    text: str = ""
