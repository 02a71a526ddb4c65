"""Which code computed a result: the project version and, in a git checkout, the commit
(and whether the work tree had uncommitted changes). Recorded in every result JSON."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import harness

REPO = Path(harness.__file__).resolve().parents[1]


@cache
def code_version() -> dict:
    out: dict = {"version": harness.__version__, "commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", "-C", str(REPO), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:  # an installed copy outside a checkout has no commit to name
        out["commit"] = commit
        out["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    return out
