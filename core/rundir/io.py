"""Low-level file primitives of the run directory: atomic writes, locked appends, tails.

Everything a reader can see is complete: whole files appear by rename, and
appended lines are written with one locked ``write`` so two processes (a trainer
and an evaluator) never interleave partial lines.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden name next to ``path`` that readers ignore (they skip dot-names)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (the one place run files are written through)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file; a failed
    write (a full disk) leaves the old file and no temporary one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fd = create_new(tmp)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def create_new(path: Path, flags: int = os.O_WRONLY) -> int:
    """Open a file that this call creates: never through a link someone planted at its name
    (whatever stands there, a stale file or a link, is removed first; the link's target is
    never touched)."""
    exclusive = flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(path, exclusive, 0o644)
    except FileExistsError:
        path.unlink()
        return os.open(path, exclusive, 0o644)


def open_own(path: Path, flags: int) -> int:
    """Open (creating if need be) a run file that must be a plain file of the run, never a link."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise OSError(exc.errno, "is a link, and overmem does not write through links", str(path)) from None
        raise


MAX_RECORD_FILE = 64 * 1024 * 1024  # run.json, checkpoint.json, configs: far below this


def read_small(path: Path, limit: int = MAX_RECORD_FILE) -> str:
    """The text of a record file someone else wrote: a regular file of at most ``limit`` bytes
    (a FIFO would block forever, a device or a huge file would fill memory: ValueError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path} is {info.st_size} bytes, more than a record file holds ({limit})")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path} grew past {limit} bytes while read")
    return data.decode("utf-8")


def load_json(path: Path) -> Any:
    """A record file's JSON (ValueError for any file that is not one: see read_small, parse_json)."""
    return parse_json(read_small(path))


def parse_json(text: str | bytes) -> Any:
    """JSON from someone else's file: too deep a nesting is a ValueError like any other bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    """Write a whole JSON-lines file at once (per-sample sidecars)."""
    text = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
    atomic_write_text(path, text)


def read_json(path: Path) -> Any:
    return load_json(path)


def append_line(path: Path, obj: dict) -> None:
    """Append one JSON record as one line, under an exclusive lock.

    O_APPEND puts every write at the current end; the lock makes the write of a
    long line indivisible for other overmem writers even on file systems where
    O_APPEND alone does not promise it. A torn line left by a writer that died
    mid-write is cut first, so it never merges with this record.
    """
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_own(path, os.O_RDWR | os.O_APPEND)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # another name elsewhere would see the writes
            raise OSError(errno.EPERM, "is not a plain file of the run only (a FIFO, a device or a hard link); "
                          "overmem does not append to it", str(path))
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            drop_torn_tail(fd)
            write_all(fd, data)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def drop_torn_tail(fd: int, chunk: int = 4096) -> int:
    """Cut an incomplete last line (a writer died mid-write) so the next record starts on a
    line of its own; returns the bytes dropped. Call it holding the file's lock: then no
    writer is mid-write, and readers never read past the last newline anyway."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    while end > 0:
        start = max(0, end - chunk)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            keep = start + at + 1
            break
        end = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    return size - keep


@dataclass(frozen=True)
class TailLine:
    """One complete line read by a tail: its 1-based number and its text."""

    lineno: int
    text: str


class JsonlTail:
    """Reads only the complete lines appended to a file since the last call.

    Remembers a byte offset; a torn last line (no newline yet) is left unread and
    returned once it is complete. If the file shrinks (rewritten), it starts over
    and says so through ``restarted``. Pure polling, so it works on network file
    systems where inotify does not.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.lineno = 0
        self.torn = False
        self.restarted = False

    def read_new(self) -> list[TailLine]:
        self.restarted = False
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.torn = False
            return []
        if size < self.offset:
            self.offset, self.lineno, self.restarted = 0, 0, True
        if size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(min(size - self.offset, MAX_CHUNK))
            end = chunk.rfind(b"\n")
            if end < 0 and len(chunk) == MAX_CHUNK:  # one line longer than any record: skipped, said
                return [self._skip_long_line(fh)]
        self.torn = end != len(chunk) - 1
        if end < 0:
            return []
        complete = chunk[: end + 1]
        self.offset += len(complete)
        lines = []
        for raw in complete.split(b"\n")[:-1]:
            self.lineno += 1
            if raw.strip():
                lines.append(TailLine(self.lineno, raw.decode("utf-8", errors="replace")))
        return lines


    def _skip_long_line(self, fh) -> "TailLine":
        """Move past a line of more than MAX_CHUNK bytes (never held in memory): its place is
        returned as a line whose text says so, for the reader to report."""
        self.lineno += 1
        while True:
            block = fh.read(MAX_CHUNK)
            at = block.find(b"\n")
            if at >= 0 or not block:
                self.offset = fh.tell() - len(block) + (at + 1 if at >= 0 else 0)
                self.torn = at < 0
                return TailLine(self.lineno, TOO_LONG)


MAX_CHUNK = 256 * 1024 * 1024  # read at most this much of metrics.jsonl per poll
TOO_LONG = "a line longer than 256 MiB (not read)"  # not JSON, so the reader reports it as a bad line


@contextmanager
def staged_dir(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder that becomes ``final`` only on success.

    On an exception the temporary folder is removed and ``final`` is untouched.
    With ``force`` an existing ``final`` is replaced (moved aside, then deleted).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final, "staging")
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if (final.exists() or final.is_symlink()) and not force:
            raise FileExistsError(str(final))
        swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(ready: Path, final: Path) -> None:
    """Make the complete folder ``ready`` become ``final``, replacing what was there (a link
    is replaced as a link: what it points to is never touched)."""
    if final.exists() or final.is_symlink():
        old = temp_sibling(final, "old")
        os.replace(final, old)
        os.replace(ready, final)
        if old.is_symlink() or not old.is_dir():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(ready, final)
