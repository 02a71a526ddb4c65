"""Small helpers shared by several test modules."""

import socket
import subprocess
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
