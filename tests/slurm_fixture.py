"""Session fixture: a real one-node Slurm cluster (slurm/local-up.sh) in a temp state dir.

conftest.py re-exports it (``from tests.slurm_fixture import local_slurm``); tests that use it
are marked ``@pytest.mark.slurm``. Without Slurm installed they skip, except under CI, where a
skip would hide that the cluster tests never ran, so they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "slurm" / "local-up.sh"
DOWN = REPO / "slurm" / "local-down.sh"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue")
# The daemons live in sbin, which a non-login shell may not have on PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b, path=SEARCH_PATH) is None]


def run_script(script: Path, *args: str, timeout: float = 120, env: dict | None = None):
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def new_state_dir() -> Path:
    # Short and under /tmp: the munge socket path must stay under the 108-byte sun_path limit,
    # which a deep pytest basetemp or a long $TMPDIR can exceed.
    return Path(
        tempfile.mkdtemp(prefix="harness-slurm-", dir="/tmp" if Path("/tmp").is_dir() else None)
    )


@pytest.fixture(scope="session")
def local_slurm():
    missing = missing_binaries()
    if missing:
        skip_or_fail(
            f"Slurm is not installed (missing {', '.join(missing)}): "
            f"apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        skip_or_fail("the local Slurm cluster needs root (slurmd runs jobs as their user)")

    state = new_state_dir()
    try:
        up = run_script(UP, str(state))
    except subprocess.TimeoutExpired as e:
        run_script(DOWN, str(state), "--purge")
        pytest.fail(f"slurm/local-up.sh did not finish in {e.timeout}s", pytrace=False)
    if up.returncode != 0:
        run_script(DOWN, str(state), "--purge")
        pytest.fail(
            f"slurm/local-up.sh failed (exit {up.returncode}):\n{up.stderr[-4000:]}", pytrace=False
        )

    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield state
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        down = run_script(DOWN, str(state), "--purge")
        if down.returncode != 0:
            # Teardown must not hide the test results; leave the evidence on stderr.
            print(f"slurm/local-down.sh failed (exit {down.returncode}):\n{down.stderr}")
