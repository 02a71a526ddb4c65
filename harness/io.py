"""Atomic writes: a reader never sees half a file, a crash never destroys the old one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj) -> Path:
    return _atomic(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def save_torch(path: Path, obj) -> Path:
    return _atomic(path, lambda f: torch.save(obj, f))
