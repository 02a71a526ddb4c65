"""Atomic writes: a reader never sees half a file, a crash never destroys the old one."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import torch


def _umask() -> int:
    """This process's umask, read without changing it where Linux says it (os.umask can only
    set it, which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path, directory: bool = False) -> None:
    """Give ``path`` the mode open() or mkdir() would have: mkstemp and mkdtemp create 0600 and
    0700 files and folders whatever the umask, so a lab-mate could not read shared results."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


# Faults of the storage, not of what is written: named with the path and the fix.
STORAGE_FAULTS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


class StorageError(OSError):
    """A write refused by the storage (full, read-only, not ours). An OSError, so that
    callers catching OSError still do; ``str()`` is the one line to show."""

    def __str__(self) -> str:
        fix = "free space" if self.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
        return f"{self.strerror} writing {self.filename}: {fix} or point --results elsewhere"


def _storage_fault(e: BaseException, folder: Path) -> int | None:
    """The storage errno behind a failed write, or None. torch.save reports a failed write as
    a RuntimeError that names no cause, so a full disk is also read off the folder itself."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_FAULTS:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    if isinstance(e, RuntimeError):
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize < 1 << 20:
            return errno.ENOSPC
    return None


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:  # nothing half written stays; the old file is untouched
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception) and (code := _storage_fault(e, path.parent)) is not None:
            raise StorageError(code, STORAGE_FAULTS[code], str(path)) from e
        raise
    return path


def write_json(path: Path, obj) -> Path:
    return _atomic(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def try_read_json(path: Path):
    """The JSON at ``path``, or None when it is missing or cannot be read (cut short, not
    JSON, not UTF-8): a results store must treat such a file as not computed, never crash."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def set_aside(path: Path) -> Path:
    """Move an unreadable file out of the way (``<name>.corrupt``, numbered if taken), so its
    result is recomputed and the bad bytes are kept for a look."""
    path = Path(path)
    dest = path.with_name(path.name + ".corrupt")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt{n}")
        n += 1
    os.replace(path, dest)
    return dest


def save_torch(path: Path, obj) -> Path:
    return _atomic(path, lambda f: torch.save(obj, f))
