"""One planned job, run where it lands (this process, a subprocess, a Slurm node), and the
runtime settings each cluster gives its jobs."""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from pathlib import Path

from harness import config as C
from harness.errors import HarnessError
from harness.eval.metrics import metrics_problem
from harness.io import StorageError, write_json
from harness.provenance import code_version
from harness.run.planning import Job


def _storage_named(run):
    """A job that a full or read-only disk stops fails with that named, on one line, like
    bad input: not as a failed check or a traceback far from the write."""

    @functools.wraps(run)
    def named(job: Job) -> dict:
        try:
            return run(job)
        except StorageError as e:
            raise HarnessError(f"{job.name}: {e}") from None

    return named


@_storage_named
def execute(job: Job) -> dict:
    """Run one job where it lands (this process, a subprocess, a Slurm node)."""
    from harness.eval.registry import evaluator
    from harness.train import pretrain

    # A job may start long after planning (a Slurm queue) from a stored config: refuse there
    # what resolving refuses, as bad input (never retried).
    cfg, rt = C.validate(job.cfg, f"job {job.name}"), job.cfg.get("runtime", {})
    results_dir = Path(rt["results_dir"])
    root = C.data_root(cfg, results_dir, rt.get("data_root"))
    C.ensure_data(cfg, root)
    if rt.get("threads"):
        # Jobs side by side must not each spin a thread per core.
        import torch

        torch.set_num_threads(rt["threads"])
    if job.kind == "pretrain":
        return pretrain(cfg, Path(job.run_dir), root)
    for dep in job.deps:
        if not Path(dep).exists():
            raise HarnessError(
                f"{job.name} needs {dep}, which does not exist: run the "
                f"pretraining job first (harness run … --only pretrain)"
            )
    t0 = time.time()
    dataset_root = None
    if job.dataset != "imagenet":
        dataset_root = C.dataset_root(cfg, results_dir, job.dataset, rt.get("data_root"))
    metrics = evaluator(job.evaluation, job.dataset)(
        Path(job.run_dir), root, cfg, dataset_root, rt.get("quiet", False)
    )
    if why := metrics_problem(metrics):
        # Written, it would be done and tabulated; a NaN from a diverged backbone comes back
        # on every try, so the job fails here with the number named.
        raise HarnessError(
            f"{job.name}: {why}: not saved; check the run's training log (loss, lr) "
            f"in {job.run_dir}"
        )
    record = {
        "run_id": C.run_id(cfg),
        "config_hash": C.config_hash(cfg),
        "method": cfg["method"],
        "preset": cfg["preset"],
        "scale": job.scale,
        "evaluation": job.evaluation,
        "dataset": job.dataset,
        "metrics": metrics,
        "eval_spec": job.spec,
        "code": code_version(),
        "seconds": time.time() - t0,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if rt.get("wandb"):
        # Before the result file: once that exists the job is done and never runs again.
        from harness.train.tracking import log_eval

        log_eval(cfg, Path(job.run_dir), record)
    write_json(Path(job.result), record)
    return record


def default_runtime(cluster: str, results_dir: Path, data_root: str | None, **extra) -> dict:
    rt = {
        "results_dir": str(Path(results_dir).resolve()),
        "quiet": cluster != "debug",
        "data_root": data_root,
    }
    if cluster in ("debug", "local"):
        # One run id, one result: the thread count changes the low bits of CPU reductions
        # (loader workers do not: every draw is seeded per sample), so both clusters use one.
        rt["threads"] = 1
    if cluster == "local":
        # Jobs run side by side, one per core: one thread and no loader workers each keeps
        # the machine from oversubscribing.
        rt["num_workers"] = 0
    rt.update({k: v for k, v in extra.items() if v is not None})
    return rt
