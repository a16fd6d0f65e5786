"""Reading the fields of a JSON record someone else wrote: each of its type, finite, in range.

The run directory's records (records.py) parse through these, so a value that is not
what the contract says is a RecordError naming the field, never a TypeError later.
"""

from __future__ import annotations

import math
from typing import Any

from overmem.errors import CorruptRun
from overmem.rundir.names import safe_name


class RecordError(CorruptRun, ValueError):
    """A JSON record that does not have the shape of the contract (a ValueError too, for parsers)."""


def finite(value: Any) -> bool:
    """A real number a float can hold (an integer beyond the float range is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def shown(value: Any) -> str:
    """A value for a message: short, whatever it is (a 400-digit integer stays a line)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def number(obj: dict, key: str, *, optional: bool = False) -> float | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{key} {shown(value)} is not a number")
    if not finite(value):
        raise RecordError(f"{key} {shown(value)} is not finite")
    return float(value)


def count(obj: dict, key: str, *, optional: bool = True) -> int | None:
    """A non-negative whole number (below 2**53, where floats stop counting), or None when absent."""
    value = obj.get(key)
    if value is None:
        if not optional:
            raise RecordError(f"{key} is missing")
        return None
    if not finite(value) or not 0 <= value < 2**53 or int(value) != value:
        raise RecordError(f"{key} {shown(value)} is not a non-negative whole number")
    return int(value)


def text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key} {value!r} is not a non-empty string")
    return value


def typed(obj: dict, key: str, kinds: tuple[type, ...], default: Any) -> Any:
    """``obj[key]`` when it has one of ``kinds`` (absent or null: ``default``)."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RecordError(f"{key} {value!r} is not a {names}")
    return value


def names(obj: dict, key: str, what: str) -> tuple[str, ...]:
    values = typed(obj, key, (list,), [])
    return tuple(safe_name(v, what, RecordError) for v in values)


def value_problem(metric: str, value: Any) -> str | None:
    """Why ``value`` cannot be a ``metric``'s value, or None: every value is finite, a
    perplexity is at least 1 (exp of a non-negative NLL) and an accuracy a fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "is not a number"
    if not finite(value):
        return "is not finite"
    if metric == "ppl" and value < 1.0 - 1e-9:
        return "is below 1 (a perplexity is exp of a non-negative loss)"
    if metric == "acc" and not 0.0 <= value <= 1.0:
        return "is not an accuracy in [0, 1]"
    return None
