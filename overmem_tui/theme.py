"""Terminal styles of the phases, derived from the one palette in overmem.table.

Each phase is a badge with its own background, so "black" stays readable on dark
and light terminal themes alike; plot bands use darker tints of the same hues.
"""

from __future__ import annotations

from overmem.table import PALETTE

_TEXT_ON = {"black": "#f0f0f0", "yellow": "#1a1a1a", "purple": "#ffffff", "overfit": "#ffffff"}


def _tint(colour: str, factor: float = 0.35) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(c * factor) for c in (r, g, b)))


PHASE_STYLE = {phase: (f"bold {_TEXT_ON[phase]} on {colour}" if phase in _TEXT_ON else colour)
               for phase, colour in PALETTE.items()}
PHASE_BAND = {phase: ("" if phase == "unknown" else _tint(colour)) for phase, colour in PALETTE.items()}
