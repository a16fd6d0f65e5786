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
    if not all(c.isprintable() for c in name):  # control, format (bidi) and unassigned characters
        return "holds a character that is not printable"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        return "is not valid text"
    if size > MAX_NAME:
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


def real_path(path: str | os.PathLike, error: type[OvermemError] = UsageError) -> Path:
    """``path`` absolute with every link resolved (``error`` for a loop of links)."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # Python raises RuntimeError for a loop of links
        raise error(f"{path}: its links go round in a loop ({exc})") from None


def links_out(entry: Path, root: Path) -> bool:
    """True for a link that leads out of ``root`` (or round in a loop of links)."""
    if not entry.is_symlink():
        return False
    try:
        return not entry.resolve().is_relative_to(root.resolve())
    except (RuntimeError, OSError):  # Python raises RuntimeError for a loop of links
        return True


def inside(root: Path, path: Path, error: type[OvermemError] = UsageError) -> Path:
    """``path`` when, with every symlink resolved, it lies inside ``root`` (also resolved)."""
    real = real_path(path, error)
    base = real_path(root, error)
    if real != base and not real.is_relative_to(base):
        raise error(f"{path} lies outside {root} (it resolves to {real}); overmem writes only inside the run")
    return real


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a name read from a file cannot drive the
    terminal that shows a message about it (colours, cursor moves, a cleared screen)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
