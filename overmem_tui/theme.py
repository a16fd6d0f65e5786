"""Phase colours, defined once for the CLI tables, the TUI and nothing else.

Each phase is a badge with its own background, so "black" stays readable on
dark and light terminal themes alike.
"""

from __future__ import annotations

PHASE_STYLE = {
    "black": "bold #f0f0f0 on #303030",
    "yellow": "bold #1a1a1a on #e8c547",
    "purple": "bold #ffffff on #7b3fb8",
    "overfit": "bold #ffffff on #b03a2e",
    "unknown": "#9a9a9a",
}

# Background tints behind curve columns in the TUI plots (same hues, quieter).
PHASE_BAND = {
    "black": "#2a2a2a",
    "yellow": "#4a4012",
    "purple": "#3b2156",
    "overfit": "#4d1d18",
    "unknown": "",
}

PHASE_MARK = {
    "black": "■",
    "yellow": "●",
    "purple": "◆",
    "overfit": "▼",
    "unknown": "·",
}

RECOMMENDED_MARK = "★"
MERGE_MARK = "⊕"
ONSET_MARK = "!"
