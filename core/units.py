"""Accuracy is a fraction everywhere in overmem; these say it as a percentage, in one place."""

from __future__ import annotations


def pct(value: float | None) -> float | None:
    """A fraction as a percentage."""
    return None if value is None else value * 100.0


def fmt_pct(value: float | None) -> str:
    """A fraction as a percentage, one decimal, no sign ("-" when missing)."""
    return "-" if value is None else f"{pct(value):.1f}"


def fmt_points(gap: float) -> str:
    """A difference of two fractions in percentage points."""
    return f"{pct(gap):.1f} points"
