"""Exclusive locks on files of a results folder: one writer per run folder and per job.

``flock`` locks belong to an open file and the kernel drops them when their holder exits,
however it exits (kill -9 included), so a crashed holder never leaves a lock that blocks.
The lock file says who holds it (pid, host, since when) for the message of whoever waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path


def holder(path: Path) -> dict:
    """Who holds (or last held) the lock at ``path``: pid, host, since; {} when unsaid."""
    try:
        said = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return said if isinstance(said, dict) else {}


def describe(who: dict) -> str:
    return (
        f"pid {who.get('pid', '?')} on host {who.get('host', '?')} (since {who.get('since', '?')})"
    )


class Lock:
    """An exclusive lock on ``path``, taken with ``acquire`` and dropped with ``release``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False, without waiting, when another holds it and not ``blocking``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        said = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        # Written in place, not replaced: the lock is on this file's inode.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(said).encode(), 0)
        return True

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the last descriptor drops the flock


@contextlib.contextmanager
def exclusive(path: Path, busy=None):
    """Hold the lock at ``path`` for the block; when another holds it, first call
    ``busy(holder)`` (it may raise to refuse instead of waiting), then wait for it."""
    lock = Lock(path)
    if not lock.acquire(blocking=False):
        if busy is not None:
            busy(holder(path))
        lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
