"""Declared parameters of plug-ins (merge methods, probes): one place says their name,
type, default, range and help; the CLI, validation and the records all read it."""

from __future__ import annotations

from dataclasses import dataclass

from overmem.errors import UsageError
from overmem.rundir.fields import finite


def option_problem(option: str, value, kind: type, *, low: float | None = None, low_open: bool = False,
                   high: float | None = None, high_open: bool = False, choices: tuple = ()) -> str | None:
    """Why ``value`` cannot be given to ``option`` (a ``kind``: bool, int, float or str, in the
    range and among the choices given), or None. Every number must be finite."""
    if kind is bool:
        return None if isinstance(value, bool) else f"{option} must be true or false, got {value!r}"
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{option} must be a whole number, got {value!r}"
    if kind is int and abs(value) >= 2**53:
        return f"{option} must be below 2**53, got a number of {len(str(abs(value)))} digits"
    if kind is float and not finite(value):
        return f"{option} must be a finite number, got {value!r}"
    if kind is str and not isinstance(value, str):
        return f"{option} must be text, got {value!r}"
    if choices and value not in choices:
        return f"{option} must be one of {', '.join(map(str, choices))}, got {value!r}"
    if low is not None and (value <= low if low_open else value < low):
        return f"{option} must be {'above' if low_open else 'at least'} {low:g}, got {value!r}"
    if high is not None and (value >= high if high_open else value > high):
        return f"{option} must be {'below' if high_open else 'at most'} {high:g}, got {value!r}"
    return None


def require(option: str, value, kind: type, **bounds) -> None:
    """UsageError when ``value`` is not a valid ``option`` (see option_problem); None passes."""
    if value is not None and (problem := option_problem(option, value, kind, **bounds)):
        raise UsageError(problem)


@dataclass(frozen=True)
class Param:
    name: str
    default: float | int
    help: str
    low: float | None = None  # inclusive bounds, when the value has some
    high: float | None = None

    def parse(self, value) -> float | int:
        kind = type(self.default)
        try:
            parsed = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{self.name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") \
                from None
        if not finite(parsed):
            raise UsageError(f"{self.name} must be a finite number, got {value!r}")
        if (self.low is not None and parsed < self.low) or (self.high is not None and parsed > self.high):
            raise UsageError(f"{self.name} must be in [{self.low}, {self.high}], got {value!r}")
        return parsed


def check_params(declared: tuple[Param, ...], given: dict, owner: str) -> dict:
    """Every declared parameter, from ``given`` or its default (UsageError for unknown ones)."""
    known = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        have = ", ".join(known) or "none"
        raise UsageError(f"{owner} takes no parameter {', '.join(unknown)} (it takes: {have})")
    return {name: p.parse(given[name]) if name in given else p.default for name, p in known.items()}


def parse_assignments(items: list[str] | None, option: str) -> dict:
    """Repeated KEY=VALUE options as a dict (values stay text until a Param parses them)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
