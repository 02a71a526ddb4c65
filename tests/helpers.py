"""Small helpers shared by several test modules."""

import os
import socket
import subprocess
import sys
import time

import pytest


def free_port() -> int:
    """A TCP port free on loopback now (torch.distributed's rendezvous, slurmctld)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_slurm(what: str, until, timeout_s: float, job_id: str) -> None:
    """Poll ``until()``; past ``timeout_s`` cancel the Slurm job and fail, saying what was awaited."""
    deadline = time.monotonic() + timeout_s
    while not until():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"{what} not seen within {timeout_s} s (job {job_id})")
        time.sleep(0.2)


def harness(*args, timeout=600, env=None, cwd=None, umask=None):
    """``harness ARGS`` as a user runs it: a fresh interpreter, output captured, ``env`` added
    to this process's environment, files created under ``umask`` if given."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
