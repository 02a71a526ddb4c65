"""What was submitted, where, and how it ended: one JSON per job under ``results/jobs/``.

A record lists the job's attempts (cluster job ids and log files). ``harness run`` reads it
to attach to a job still queued or running instead of submitting it twice; ``harness
status`` reads it to say what each job is doing and why one failed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.io import try_read_json, write_json

# Slurm states in which a job will still run (or is running).
SLURM_LIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STAGE_OUT",
    "SIGNALING",
    "PREEMPTED",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def path(results_dir: Path, job) -> Path:
    return Path(results_dir) / "jobs" / f"{hashlib.sha1(job.result.encode()).hexdigest()[:12]}.json"


def lock(results_dir: Path, job) -> Path:
    """The job's lock file: held while one ``harness run`` decides to submit it (and, in a
    debug run, while it runs), so two runs started together never both submit it."""
    return path(results_dir, job).with_suffix(".lock")


def load(results_dir: Path, job) -> dict | None:
    # An unreadable record (cut short) counts as none: the job is submitted afresh.
    return try_read_json(path(results_dir, job))


def attempts(results_dir: Path, job) -> int:
    rec = load(results_dir, job)
    return len(rec["attempts"]) if rec else 0


def _runs(pid: str, program: str) -> bool:
    """Whether process ``pid`` is alive and runs ``program`` (its id not reused by another)."""
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


@dataclass
class Handle:
    """A submitted job, fresh or found in a record; ``finished`` once it will not run again."""

    job_id: str
    cluster: str
    result: str
    stderr: str
    submitit_job: object = None  # kept for local jobs, so finished children are reaped

    def state(self) -> str:
        """Slurm's state (PENDING, RUNNING, …), RUNNING for a live local job (or a live
        ``harness run --cluster debug`` running it in its own process), else GONE."""
        if self.cluster == "debug":
            alive = _runs(self.job_id, "harness") and not Path(self.result).exists()
            return "RUNNING" if alive else "GONE"
        if self.cluster == "local":
            if self.submitit_job is not None:
                # Our own child: ask it (this also reaps it). /proc would show the parent's
                # command line between fork and exec and call a starting job gone.
                return "GONE" if self.submitit_job.done() else "RUNNING"
            # Another run's child: between its fork and exec, /proc shows that run's command.
            live = _runs(self.job_id, "submitit") or _runs(self.job_id, "harness")
            return "RUNNING" if live else "GONE"
        out = subprocess.run(
            ["squeue", "-h", "-j", self.job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        states = out.stdout.split()
        return states[0] if states and states[0] in SLURM_LIVE else "GONE"

    def finished(self) -> bool:
        return Path(self.result).exists() or self.state() == "GONE"


def started(results_dir: Path, job, job_id, stderr, cluster: str, submitit_job=None) -> Handle:
    rec = load(results_dir, job) or {
        "name": job.name,
        "kind": job.kind,
        "result": job.result,
        "run_dir": job.run_dir,
        "attempts": [],
    }
    h = Handle(str(job_id), cluster, job.result, str(stderr), submitit_job)
    rec["attempts"].append(
        {
            "job_id": h.job_id,
            "cluster": cluster,
            "stderr": h.stderr,
            "submitted": _now(),
            "host": socket.gethostname(),
            "by_pid": os.getpid(),
        }
    )
    rec.pop("failed", None)
    write_json(path(results_dir, job), rec)
    return h


def attach(results_dir: Path, job, cluster: str) -> Handle | None:
    """The job's last attempt, if it is on ``cluster`` and still queued or running."""
    rec = load(results_dir, job)
    if rec and rec["attempts"] and rec["attempts"][-1]["cluster"] == cluster:
        last = rec["attempts"][-1]
        h = Handle(last["job_id"], cluster, job.result, last["stderr"])
        if not h.finished():
            return h
    return _queued_by_name(results_dir, job) if cluster == "slurm" else None


def _queued_by_name(results_dir: Path, job) -> Handle | None:
    """A Slurm job of this name writing into this results dir that no record knows:
    ``harness run`` was killed between sbatch and the record. Adopt it, don't submit a twin."""
    logs = str(Path(results_dir).resolve() / "logs") + "/"
    out = subprocess.run(
        ["squeue", "-h", "--name", job.name, "-O", "JobID:24,State:24,STDERR:4096"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    for line in out.splitlines():
        parts = line.split(None, 2)
        # Not COMPLETING: that one has run; its result decides, not a second look at it.
        if (
            len(parts) == 3
            and parts[1] in SLURM_LIVE - {"COMPLETING"}
            and parts[2].strip().startswith(logs)
        ):
            # squeue shows submitit's pattern (%t unexpanded); task 0's log is the one read.
            stderr = Path(logs, parts[0], f"{parts[0]}_0_log.err")
            return started(results_dir, job, parts[0], stderr, "slurm")
    return None


def mark_failed(results_dir: Path, job, summary: str) -> None:
    rec = load(results_dir, job)
    if rec:
        rec["failed"] = {"summary": summary, "at": _now()}
        write_json(path(results_dir, job), rec)


def log_tail(stderr: str, n: int = 8) -> list[str]:
    """The last lines of a job's log that say something (submitit's own chatter dropped)."""
    try:
        lines = Path(stderr).read_text(errors="replace").splitlines()
    except OSError:
        return []
    said = [ln for ln in lines if ln.strip() and "submitit INFO" not in ln]
    return said[-n:]


@dataclass
class Failure:
    summary: str
    retry: bool


def failure(h: Handle) -> Failure:
    """Why a job ended without its result, and whether running it again could help."""
    tail = log_tail(h.stderr, 40)
    # submitit logs the job's traceback; its last line names the exception.
    errors = [
        ln.strip() for ln in tail if ln.strip().split(":")[0].endswith(("Error", "Exception"))
    ]
    if errors:
        last = errors[-1]
        # Bad input (a HarnessError) fails the same way every time.
        return Failure(
            last, retry=not last.startswith(("harness.errors.HarnessError", "HarnessError"))
        )
    return Failure(f"ended without a result and without a traceback (killed? see {h.stderr})", True)
