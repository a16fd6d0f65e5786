"""Why a data file did not load, in words that name the file and the row.

datasets reports a malformed JSON Lines file as a generic DatasetGenerationError and an
empty one as StopIteration; the cause that names the row is in a log line. These run
only after a load has failed, so a large file that loads costs nothing.
"""

from __future__ import annotations

from pathlib import Path


def root_cause(exc: BaseException) -> str:
    """The innermost exception's message: datasets wraps the parser's own error (the one that
    names the row) in a generic one."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    inner = seen[-1]
    return f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__


def diagnose_files(files: list[str]) -> str | None:
    """What is wrong with which local JSON/JSONL file and row, or None when they parse (the
    failure lies elsewhere). Only called after a load failed, so large files cost nothing."""
    from overmem.rundir.io import parse_json

    for name in files:
        path = Path(name)
        if path.stat().st_size == 0:
            return f"{path} is empty"
        if path.suffix.lower() not in (".json", ".jsonl"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".json":
            try:
                obj = parse_json(text)
            except ValueError:
                obj = None  # datasets reads JSON Lines from .json files too
            else:
                if isinstance(obj, list) and not obj:
                    return f"{path} holds no rows (an empty list)"
                if isinstance(obj, list) and not all(isinstance(row, dict) for row in obj):
                    row = next(i for i, r in enumerate(obj) if not isinstance(r, dict))
                    return f"{path} row {row} is not a JSON object"
                if isinstance(obj, (list, dict)):
                    continue
        rows = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = parse_json(line)
            except ValueError as exc:
                return f"{path} line {lineno} is not JSON ({exc})"
            if not isinstance(row, dict):
                return f"{path} line {lineno} is not a JSON object"
            rows += 1
        if rows == 0:
            return f"{path} holds no rows"
    return None
