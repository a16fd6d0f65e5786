"""Names and paths that other people's files and flags hand to overmem, made safe.

A run directory is untrusted input: its checkpoint.json, run.json, metrics.jsonl,
selection and a Trainer's files may come from anyone. Every name overmem takes from
them (a checkpoint, a split, a merge's parents, the selection) or from a flag
(``merge A B``, ``select``, ``--split-file NAME=PATH``) becomes a path component
somewhere, so it must be exactly one safe component; and every path overmem writes
or deletes must lie inside the run after symlinks are resolved.
"""

from __future__ import annotations

import os
from pathlib import Path

from overmem.errors import OvermemError, UsageError

MAX_NAME = 200  # leaves room for ".<name>.staging-<pid>" within the usual 255-byte limit


def unsafe_reason(name: object) -> str | None:
    """Why ``name`` cannot be one path component, or None when it can."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        return "holds a path separator"
    if name in (".", "..") or name.startswith("."):
        return "starts with a dot"
    if "\0" in name or any(ord(c) < 32 for c in name):
        return "holds a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        return f"is longer than {MAX_NAME} bytes"
    return None


def safe_name(name: object, what: str = "name", error: type[OvermemError] = UsageError) -> str:
    """``name`` itself when it is one safe path component (no separator, no leading dot,
    not ``..``), else ``error`` saying which ``what`` it was."""
    reason = unsafe_reason(name)
    if reason is not None:
        raise error(f"{what} {name!r} {reason}: it must be one plain file name")
    return name  # type: ignore[return-value]


def is_safe_name(name: object) -> bool:
    return unsafe_reason(name) is None


def inside(root: Path, path: Path, error: type[OvermemError] = UsageError) -> Path:
    """``path`` when, with every symlink resolved, it lies inside ``root`` (also resolved)."""
    real = Path(path).resolve()
    base = Path(root).resolve()
    if real != base and not real.is_relative_to(base):
        raise error(f"{path} lies outside {root} (it resolves to {real}); overmem writes only inside the run")
    return real


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a name read from a file cannot drive the
    terminal that shows a message about it (colours, cursor moves, a cleared screen)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
