"""Declared parameters of plug-ins (merge methods, probes): one place says their name,
type, default, range and help; the CLI, validation and the records all read it."""

from __future__ import annotations

from dataclasses import dataclass

from overmem.errors import UsageError


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
        except (TypeError, ValueError):
            raise UsageError(f"{self.name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") \
                from None
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
