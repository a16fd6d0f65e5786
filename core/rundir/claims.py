"""Claims on checkpoints as leases: which evaluator works on what, across hosts.

A claim file ``claims/<checkpoint>.json`` names its holder (host, pid, a random
token) and a heartbeat the holder refreshes while it works. A claim is stale, and
the next evaluator takes it over, when its heartbeat is older than the timeout
(on any host: a dead evaluator on another machine of a shared file system cannot
be asked) or, on the same host, at once when its process is gone. Taking, refreshing
and releasing happen under one lock file, so two evaluators never both win a stale
claim; a holder whose claim was taken over sees it (``held()``) and drops its results.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from overmem.rundir import io

CLAIM_TIMEOUT = 120.0  # seconds without a heartbeat after which any host may take a claim over
HEARTBEAT = 10.0  # how often a holder refreshes its claim
LOCK = ".lock"


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = io.open_own(folder / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(path: Path) -> dict | None:
    try:
        obj = io.read_json(path)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def process_gone(pid) -> bool:
    """True when no process ``pid`` runs on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, TypeError, ValueError, OverflowError):
        return False
    return False


def is_stale(path: Path, timeout: float = CLAIM_TIMEOUT, now: float | None = None) -> bool:
    """True when nobody works on the claim any more (see the module doc)."""
    now = time.time() if now is None else now
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True
    obj = _read(path)
    if obj is None:  # garbage (claims are written whole): stale once it is old
        return now - mtime > timeout
    try:
        beat = float(obj.get("heartbeat") or 0.0)
    except (TypeError, ValueError, OverflowError):
        beat = 0.0
    # the holder writes the heartbeat with the file, so one far beyond the file's time (or not
    # a number) was not written by a holder: the file's time counts
    beat = max(beat, mtime) if beat <= mtime + 300 else mtime
    if now - beat > timeout:
        return True
    return obj.get("host") == socket.gethostname() and process_gone(obj.get("pid"))


class Claim:
    """A held claim; refresh it while working (``heartbeat()``) and release it at the end."""

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self.token = token

    def held(self) -> bool:
        obj = _read(self.path)
        return obj is not None and obj.get("token") == self.token

    def refresh(self) -> bool:
        """Renew the heartbeat; False when the claim was taken over."""
        with _locked(self.path.parent):
            if not self.held():
                return False
            io.atomic_write_json(self.path, _record(self.token))
            return True

    def release(self) -> None:
        with _locked(self.path.parent):
            if self.held():
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass

    @contextmanager
    def heartbeat(self, interval: float = HEARTBEAT) -> Iterator["Claim"]:
        """Refresh in a background thread while the block runs; release at the end."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                if not self.refresh():
                    return

        thread = threading.Thread(target=beat, name=f"claim-{self.path.stem}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.release()


def _record(token: str) -> dict:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "heartbeat": now}


def try_claim(path: Path, *, steal: bool = False, timeout: float = CLAIM_TIMEOUT) -> Claim | None:
    """Claim ``path`` unless a live holder has it (``steal``: take it anyway)."""
    with _locked(path.parent):
        if path.exists() and not steal and not is_stale(path, timeout):
            return None
        token = uuid.uuid4().hex
        io.atomic_write_json(path, _record(token))
        return Claim(path, token)


def describe_holder(path: Path) -> str:
    """Who holds the claim at ``path``, in words (for the message that refuses a second holder)."""
    obj = _read(path) or {}
    try:
        beat = max(float(obj.get("heartbeat") or 0.0), path.stat().st_mtime)
    except (OSError, TypeError, ValueError):
        beat = 0.0
    ago = f", heartbeat {time.time() - beat:.0f} s ago" if beat else ""
    return f"pid {obj.get('pid', '?')} on {obj.get('host', '?')}{ago}"


def holders(folder: Path) -> list[str]:
    """Names of the checkpoints claimed in ``folder`` (stale or not)."""
    try:
        return sorted(p.stem for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []
