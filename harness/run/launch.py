"""Where jobs run: submit what is missing in dependency order, follow it to the end.

``debug`` runs each job in this process; ``local`` starts submitit subprocesses, no more at
once than the cores allow; ``slurm`` submits through submitit, evaluations held by ``afterok``
on their pretraining job. Every submission is recorded (``harness.run.records``), so a re-issued
``harness run`` attaches to what is still queued or running instead of submitting it again,
and ``harness status`` can tell what happened. A failed job is submitted again up to
``retries`` times, unless it failed on a HarnessError (bad input: a retry cannot help).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import config as C
from harness.errors import HarnessError
from harness.io import set_aside
from harness.locks import describe, exclusive
from harness.run import records
from harness.run.execute import execute
from harness.run.planning import Job
from harness.run.results import read_result

DEFAULT_RETRIES = 1
# Where jobs run: in this process one by one, as local subprocesses side by side, on Slurm.
CLUSTERS = ("debug", "local", "slurm")


class Runner:
    """What submitit pickles and calls: one job. On USR2 (preemption, or the time limit
    coming) submitit calls ``checkpoint`` and requeues what it returns; pretraining has by
    then saved its step (``harness.parallel.preempt``), so the requeued run resumes exactly."""

    def __init__(self, max_preemptions: int = 20, requeues: int = 0):
        self.max_preemptions, self.requeues = max_preemptions, requeues

    def __call__(self, job: Job) -> dict:
        return execute(job)

    def checkpoint(self, job: Job):
        import submitit

        if self.requeues >= self.max_preemptions:
            return None  # submitit then ends the job as failed, and the graph may retry it
        return submitit.helpers.DelayedSubmission(
            Runner(self.max_preemptions, self.requeues + 1), job
        )


def _executor(cluster: str, folder: Path, profile: dict | None, job: Job):
    import submitit

    if cluster == "local":
        ex = submitit.LocalExecutor(folder=str(folder), python=sys.executable)
        ex.update_parameters(timeout_min=(profile or {}).get("time_min") or 24 * 60)
        return ex
    from harness.run.profiles import executor_kwargs, job_shape, submitit_parameters

    shape = job_shape(profile, job.kind)
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", **executor_kwargs(shape))
    ex.update_parameters(name=job.name, **submitit_parameters(shape))
    return ex


def _preflight(todo: list[Job], cluster: str, results_dir: Path) -> None:
    """Everything that can be wrong before queueing: the cluster, the datasets. Generated
    datasets are written once here rather than raced for by concurrent jobs."""
    if cluster == "slurm":
        from harness.run.profiles import ensure_slurm_reachable

        ensure_slurm_reachable()
    from harness.data import check_imagefolder

    roots = {
        C.data_root(j.cfg, results_dir, j.cfg["runtime"].get("data_root")): j.cfg for j in todo
    }
    # Two runs started together would generate the same synthetic trees side by side.
    with exclusive(Path(results_dir) / "jobs" / "data.lock"):
        for root, cfg in roots.items():
            C.ensure_data(cfg, root)
            for split in ("train", "val"):
                check_imagefolder(root, split)
        for j in todo:
            if j.kind == "eval" and j.dataset != "imagenet":
                C.dataset_root(j.cfg, results_dir, j.dataset, j.cfg["runtime"].get("data_root"))


def local_slots(jobs: list[Job]) -> int:
    threads = max([j.cfg["runtime"].get("threads") or 1 for j in jobs] or [1])
    return max(1, (os.cpu_count() or 1) // threads)


def run(
    jobs: list[Job],
    cluster: str,
    results_dir: Path,
    profile: dict | None = None,
    log=print,
    wait: bool = True,
    timeout_s: float | None = None,
    retries: int | None = None,
    parallel: int | None = None,
) -> dict:
    """Submit what is missing, in dependency order; return counts: ``already_done`` (a result
    was there: not submitted), ``submitted``, ``attached`` (already queued or running),
    ``failed``, and ``blocked`` (not run because the pretraining they need failed)."""
    results_dir = Path(results_dir)
    once: dict[str, Job] = {}
    for j in jobs:
        if j.result in once:
            raise HarnessError(
                f"two rows plan the same job {j.name} (their methods resolve to one run id): "
                "name each method once"
            )
        once[j.result] = j
    # A run folder whose config.yaml is not this run's is no run: set aside, trained again.
    bad = {j.run_dir: why for j in jobs if j.kind == "pretrain" and (why := corrupt_config(j))}
    if bad:
        writable(results_dir)
    for run_dir, why in bad.items():
        log(f"{why}: run folder moved to {set_aside(run_dir).name}, recomputing it")
    # An unreadable result, or one of another run, is no result: set aside, computed again.
    wrong = {}
    for j in jobs:
        if j.done() and (why := read_result(j)[1]):
            wrong[j.result] = why
    if wrong or not all(j.done() for j in jobs):
        writable(results_dir)  # a shared read-only folder with every result is still fine
    for res, why in wrong.items():
        log(f"{why}: moved to {set_aside(res).name}, recomputing it")
    todo = [j for j in jobs if not j.done()]
    done = len(jobs) - len(todo)
    if not todo:
        log(f"nothing to submit: all {len(jobs)} results exist in {results_dir}")
        return summary(done)
    _preflight(todo, cluster, results_dir)
    log(f"{len(todo)} job(s) to run, {done} already done ({cluster})")
    if retries is None:
        retries = (profile or {}).get("retries", DEFAULT_RETRIES)
    if cluster == "debug":
        return _run_here(todo, done, results_dir, log)
    counts = Graph(
        todo,
        cluster,
        results_dir,
        profile,
        log,
        retries,
        parallel or (local_slots(todo) if cluster == "local" else None),
    ).follow(wait, timeout_s, done)
    if cluster == "local":
        # submitit's local jobs create their folder template itself (logs/%j) besides
        # logs/<pid>/: an empty folder named after nothing.
        with contextlib.suppress(OSError):
            (results_dir / "logs" / "%j").rmdir()
    return counts


def corrupt_config(j: Job) -> str | None:
    """Why the run folder's config.yaml is not the config of pretraining ``j`` (not YAML, not
    a mapping, another run's), or None when it is, or there is none yet."""
    path = Path(j.run_dir) / "config.yaml"
    try:
        stored, why = C.read_stored_config(path)
    except OSError as e:
        return f"{path} cannot be read ({e.strerror or e})"
    if why or stored is None:
        return why
    try:
        theirs = C.config_hash(stored)
    except Exception:  # a mapping missing what every config has
        return f"{path} is not a complete config"
    ours = C.config_hash(j.cfg)
    if theirs != ours:
        return f"{path} holds another run's config (hash {theirs}, not {ours})"
    return None


def writable(folder: Path) -> None:
    """Refuse a results folder this process cannot write, before any job starts: a job would
    otherwise fail only once it has computed its result."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise HarnessError(
            f"cannot write to the results folder {folder} ({e.strerror}): make it writable, "
            "or pass --results DIR"
        ) from None


def summary(already_done=0, submitted=0, attached=0, failed=0, blocked=0) -> dict:
    return {
        "already_done": already_done,
        "submitted": submitted,
        "attached": attached,
        "failed": failed,
        "blocked": blocked,
    }


def _run_here(todo: list[Job], done: int, results_dir: Path, log) -> dict:
    """In this process, in order (a failure raises: nothing after it runs). Each job is
    recorded like a submitted one (job id: this process), so ``harness status`` sees it.
    A job runs holding its lock: another debug run of it waits, then counts it attached."""
    ran = blocked = attached = 0
    for j in todo:

        def busy(who: dict, j=j):
            log(f"{j.name} is being run by {describe(who)}: waiting for it")

        with exclusive(records.lock(results_dir, j), busy):
            if j.done():
                log(f"{j.name} was computed by another harness run: not run again")
                attached += 1
                continue
            if all(Path(d).exists() for d in j.deps):
                log(f"running {j.name}")
                records.started(results_dir, j, os.getpid(), "", "debug")
                threads = torch.get_num_threads()
                try:
                    execute(j)
                except BaseException as e:
                    last = str(e).strip().splitlines()[-1:] or [""]
                    records.mark_failed(results_dir, j, f"{type(e).__name__}: {last[0]}")
                    raise
                finally:
                    # The job's thread count is the job's: the calling process keeps its own.
                    torch.set_num_threads(threads)
                ran += 1
            else:  # its pretraining stopped early (``stop_at``) without a result
                log(f"not run {j.name}: its pretraining has no result")
                blocked += 1
    return summary(done, submitted=ran, attached=attached, blocked=blocked)


class Graph:
    """The jobs of one ``harness run`` and where each stands: waiting, live, done or failed."""

    def __init__(self, todo, cluster, results_dir, profile, log, retries, parallel):
        self.todo, self.cluster, self.results_dir = todo, cluster, results_dir
        self.profile, self.log, self.retries, self.parallel = profile, log, retries, parallel
        self.live: dict[str, records.Handle] = {}  # result path -> queued / running job
        self.failed: list[str] = []
        self.blocked: list[str] = []  # not run: the pretraining they need failed
        self.submissions = 0
        for j in todo:
            h = records.attach(results_dir, j, cluster)
            if h:
                self.live[j.result] = h
                self.log(
                    f"{j.name} is already {'queued or running' if cluster == 'slurm' else 'running'} "
                    f"as job {h.job_id}: not submitted again"
                )
        self.attached = len(self.live)
        self.waiting = [j for j in todo if j.result not in self.live]

    def follow(self, wait: bool, timeout_s: float | None, done: int) -> dict:
        t0 = time.time()
        while self.waiting or self.live:
            self._submit_ready()
            self._collect()
            if not wait:
                break
            if timeout_s and time.time() - t0 > timeout_s:
                raise HarnessError(
                    f"jobs still running after {timeout_s:.0f} s: see `harness status` "
                    f"and re-run the same command to continue"
                )
            if self.waiting or self.live:
                time.sleep(0.5 if self.cluster == "local" else 2.0)
        return summary(done, self.submissions, self.attached, len(self.failed), len(self.blocked))

    def _submit_ready(self) -> None:
        for j in list(self.waiting):
            if any(d in self.failed for d in j.deps):
                self.waiting.remove(j)
                self.blocked.append(j.result)
                self.log(f"not run {j.name}: its pretraining failed")
                continue
            # Locally a job starts once its inputs exist; Slurm holds it with afterok.
            inputs_missing = not all(Path(d).exists() for d in j.deps)
            if inputs_missing and (
                self.cluster == "local" or not all(d in self.live for d in j.deps)
            ):
                continue
            if self.parallel and len(self.live) >= self.parallel:
                return
            self._submit(j)

    def _submit(self, j: Job) -> None:
        # Decided under the job's lock, against its record: another ``harness run`` started
        # at the same time may have submitted it since this one looked.
        with exclusive(records.lock(self.results_dir, j)):
            if j.done():
                self.waiting.remove(j)
                self.attached += 1
                self.log(f"{j.name} was computed by another harness run: not submitted again")
                return
            h = records.attach(self.results_dir, j, self.cluster)
            if h:
                self.waiting.remove(j)
                self.live[j.result] = h
                self.attached += 1
                self.log(
                    f"{j.name} was just submitted by another harness run as job {h.job_id}: attached to it"
                )
                return
            self._submit_locked(j)

    def _submit_locked(self, j: Job) -> None:
        ex = _executor(self.cluster, self.results_dir / "logs" / "%j", self.profile, j)
        after = [self.live[d].job_id for d in j.deps if d in self.live]
        if self.cluster == "slurm" and after:
            ex.update_parameters(
                slurm_additional_parameters={
                    "dependency": "afterok:" + ":".join(after),
                    "kill_on_invalid_dep": "yes",
                }
            )
        s = ex.submit(Runner((self.profile or {}).get("max_preemptions", 20)), j)
        self.live[j.result] = records.started(
            self.results_dir, j, s.job_id, s.paths.stderr, self.cluster, s
        )
        self.waiting.remove(j)
        self.submissions += 1
        self.log(f"submitted {j.name} as job {s.job_id}")

    def _collect(self) -> None:
        for res, h in list(self.live.items()):
            if not h.finished():
                continue
            del self.live[res]
            j = next(j for j in self.todo if j.result == res)
            if Path(res).exists():
                continue
            if any(not Path(d).exists() for d in j.deps):
                # Cancelled by Slurm because its dependency failed: not an attempt of its own.
                self.waiting.append(j)
                continue
            failure = records.failure(h)
            tried = records.attempts(self.results_dir, j)
            if failure.retry and tried <= self.retries:
                self.log(
                    f"job {h.job_id} ({j.name}) failed: {failure.summary}; "
                    f"retry {tried}/{self.retries}"
                )
                self.waiting.append(j)
                continue
            self.failed.append(res)
            records.mark_failed(self.results_dir, j, failure.summary)
            self.log(f"FAILED {j.name}: {failure.summary} (full log: {h.stderr})")
