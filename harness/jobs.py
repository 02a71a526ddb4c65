"""Table spec → jobs, and jobs → executors.

*What* runs: one pretraining job per table row and one evaluation job per (row,
evaluation, dataset), each keyed by the hash of its resolved config, each writing one JSON.
*Where* it runs: ``debug`` (in this process), ``local`` (submitit subprocesses) or
``slurm`` (submitit on a real cluster, evaluations held by ``afterok`` dependencies).
A job whose result file exists is never submitted again.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import config as C
from harness import presets
from harness.errors import HarnessError
from harness.io import read_json, write_json


@dataclass
class Job:
    kind: str                       # "pretrain" | "eval"
    cfg: dict                       # resolved run config (+ runtime)
    run_dir: str
    result: str                     # the JSON this job writes when it succeeds
    evaluation: str | None = None
    dataset: str | None = None
    deps: list = field(default_factory=list)  # results this job needs first

    @property
    def name(self) -> str:
        rid = C.run_id(self.cfg)
        return rid if self.kind == "pretrain" else f"{rid}:{self.evaluation}-{self.dataset}"

    def done(self) -> bool:
        return Path(self.result).exists()


def eval_config(cfg: dict, evaluation: str) -> dict:
    return {"evaluation": evaluation, **presets.get(cfg["preset"])[evaluation]}


def eval_result_path(run_dir: Path, cfg: dict, evaluation: str, dataset: str) -> Path:
    h = hashlib.sha1(json.dumps(eval_config(cfg, evaluation), sort_keys=True).encode()).hexdigest()[:8]
    return Path(run_dir) / "eval" / f"{evaluation}-{dataset}-{h}.json"


def plan(spec, preset: str, results_dir: Path, seed: int = 0, runtime: dict | None = None,
         only: str | None = None) -> list[Job]:
    results_dir = Path(results_dir).resolve()
    jobs: list[Job] = []
    for method in spec.rows:
        cfg = C.with_runtime(C.resolve(method, preset, seed), **(runtime or {}))
        run_dir = results_dir / "runs" / C.run_id(cfg)
        pre = Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))
        jobs.append(pre)
        if only == "pretrain":
            continue
        for evaluation, dataset in spec.evaluations:
            res = eval_result_path(run_dir, cfg, evaluation, dataset)
            jobs.append(Job("eval", cfg, str(run_dir), str(res), evaluation, dataset,
                            deps=[pre.result]))
    return jobs


def execute(job: Job) -> dict:
    """Run one job where it lands (this process, a subprocess, a Slurm node)."""
    from harness.evaluators import EVALUATORS
    from harness.train import pretrain

    cfg, rt = job.cfg, job.cfg.get("runtime", {})
    results_dir = Path(rt["results_dir"])
    root = C.data_root(cfg, results_dir, rt.get("data_root"))
    C.ensure_data(cfg, root)
    if job.kind == "pretrain":
        return pretrain(cfg, Path(job.run_dir), root)
    for dep in job.deps:
        if not Path(dep).exists():
            raise HarnessError(f"{job.name} needs {dep}, which does not exist: run the "
                               f"pretraining job first (harness run … --only pretrain)")
    t0 = time.time()
    full_cfg = {**cfg, **{job.evaluation: presets.get(cfg["preset"])[job.evaluation]}}
    extra = {}
    if job.dataset != "imagenet":
        extra = {"dataset": job.dataset,
                 "dataset_root": C.dataset_root(cfg, results_dir, job.dataset, rt.get("data_root"))}
    metrics = EVALUATORS[job.evaluation](Path(job.run_dir), root, full_cfg,
                                         quiet=rt.get("quiet", False), **extra)
    record = {
        "run_id": C.run_id(cfg), "config_hash": C.config_hash(cfg), "method": cfg["method"],
        "preset": cfg["preset"], "scale": presets.get(cfg["preset"])["scale"],
        "evaluation": job.evaluation, "dataset": job.dataset, "metrics": metrics,
        "eval_config": eval_config(cfg, job.evaluation), "seconds": time.time() - t0,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(Path(job.result), record)
    return record


# ---- executors ------------------------------------------------------------------------------

def _executor(cluster: str, folder: Path, profile: dict | None, name: str):
    import submitit

    if cluster == "local":
        ex = submitit.LocalExecutor(folder=str(folder), python=sys.executable)
        ex.update_parameters(timeout_min=(profile or {}).get("time_min", 24 * 60))
        return ex
    from harness.slurm_check import submitit_parameters

    from harness.slurm_check import executor_kwargs

    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", **executor_kwargs(profile))
    ex.update_parameters(name=name, **submitit_parameters(profile))
    return ex


def run(jobs: list[Job], cluster: str, results_dir: Path, profile: dict | None = None,
        log=print, wait: bool = True, timeout_s: float | None = None) -> dict:
    """Submit what is missing, in dependency order; return counts."""
    results_dir = Path(results_dir)
    todo = [j for j in jobs if not j.done()]
    skipped = len(jobs) - len(todo)
    if not todo:
        log(f"nothing to submit: all {len(jobs)} results exist in {results_dir}")
        return {"submitted": 0, "skipped": skipped, "failed": 0}
    if cluster == "slurm":
        from harness.slurm_check import ensure_slurm_reachable

        ensure_slurm_reachable()
    log(f"{len(todo)} job(s) to run, {skipped} already done ({cluster})")
    # Generated datasets are written once here, not raced for by concurrent jobs; a bad
    # dataset root is reported before anything is queued.
    from harness.data import check_imagefolder

    roots = {C.data_root(j.cfg, results_dir, j.cfg["runtime"].get("data_root")): j.cfg for j in todo}
    for root, cfg in roots.items():
        C.ensure_data(cfg, root)
        for split in ("train", "val"):
            check_imagefolder(root, split)
    for j in todo:
        if j.kind == "eval" and j.dataset != "imagenet":
            C.dataset_root(j.cfg, results_dir, j.dataset, j.cfg["runtime"].get("data_root"))
    if cluster == "debug":
        failed = 0
        for j in todo:
            if all(Path(d).exists() for d in j.deps):
                log(f"running {j.name}")
                execute(j)
            else:
                failed += 1
        return {"submitted": len(todo), "skipped": skipped, "failed": failed}
    folder = results_dir / "logs" / "%j"
    submitted: dict[str, object] = {}   # result path -> submitit job (or an attached one)
    for j in todo:
        live = _in_flight(results_dir, j, cluster)
        if live:
            submitted[j.result] = live
            log(f"{j.name} is already running as job {live.job_id}: not submitted again")
    pending = [j for j in todo if j.result not in submitted]
    failed: list[str] = []
    t0 = time.time()
    while pending or any(not s.done() for s in submitted.values()):
        for j in list(pending):
            dep_jobs = [submitted[d] for d in j.deps if d in submitted]
            if not all(Path(d).exists() for d in j.deps):
                # Locally a job starts once its inputs exist; Slurm holds it with afterok.
                if cluster == "local" or len(dep_jobs) != len(j.deps):
                    continue
            ex = _executor(cluster, folder, profile, j.name)
            if cluster == "slurm" and dep_jobs:
                ids = ":".join(str(s.job_id) for s in dep_jobs)
                ex.update_parameters(slurm_additional_parameters={
                    "dependency": f"afterok:{ids}", "kill_on_invalid_dep": "yes"})
            s = ex.submit(execute, j)
            submitted[j.result] = s
            _record(results_dir, j, s, cluster)
            log(f"submitted {j.name} as job {s.job_id}")
            pending.remove(j)
        for res, s in submitted.items():
            if s.done() and not Path(res).exists() and res not in failed:
                failed.append(res)
                log(f"FAILED {_name_of(todo, res)}: {_tail(s)}")
                for j in list(pending):
                    if res in j.deps:
                        pending.remove(j)
                        failed.append(j.result)
                        log(f"skipped {j.name}: its pretraining failed")
        if not wait:
            break
        if timeout_s and time.time() - t0 > timeout_s:
            raise HarnessError(f"jobs still running after {timeout_s:.0f} s: check "
                               f"{results_dir}/logs and re-run the same command to continue")
        time.sleep(0.5 if cluster == "local" else 2.0)
    return {"submitted": len(submitted), "skipped": skipped, "failed": len(failed)}


def _name_of(jobs, res):
    return next((j.name for j in jobs if j.result == res), res)


def _tail(s, n: int = 3) -> str:
    try:
        err = Path(s.paths.stderr).read_text().strip().splitlines()
        return " | ".join(err[-n:]) if err else f"see {s.paths.stderr}"
    except OSError:
        return "no log"


def _record_path(results_dir: Path, job: Job) -> Path:
    return results_dir / "jobs" / f"{hashlib.sha1(job.result.encode()).hexdigest()[:12]}.json"


def _record(results_dir: Path, job: Job, sjob, cluster: str) -> None:
    rec = {"name": job.name, "job_id": str(sjob.job_id), "cluster": cluster, "kind": job.kind,
           "result": job.result, "stderr": str(sjob.paths.stderr),
           "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(_record_path(results_dir, job), rec)


@dataclass
class _Attached:
    """A job an earlier ``harness run`` submitted that is still queued or running."""

    job_id: str
    cluster: str
    result: str
    stderr: str

    def alive(self) -> bool:
        if self.cluster == "local":
            try:
                return "submitit" in Path(f"/proc/{self.job_id}/cmdline").read_text()
            except OSError:
                return False
        out = subprocess.run(["squeue", "-h", "-j", self.job_id, "-o", "%T"],
                             capture_output=True, text=True)
        return out.stdout.strip() not in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")

    def done(self) -> bool:
        return Path(self.result).exists() or not self.alive()

    @property
    def paths(self):
        return type("P", (), {"stderr": self.stderr})


def _in_flight(results_dir: Path, job: Job, cluster: str) -> _Attached | None:
    rec_path = _record_path(results_dir, job)
    if not rec_path.exists():
        return None
    rec = read_json(rec_path)
    if rec["cluster"] != cluster:
        return None
    a = _Attached(rec["job_id"], cluster, job.result, rec.get("stderr", ""))
    return a if a.alive() else None


def load_results(jobs: list[Job]) -> list[dict]:
    return [read_json(j.result) for j in jobs if j.kind == "eval" and j.done()]


def default_runtime(cluster: str, results_dir: Path, data_root: str | None, **extra) -> dict:
    rt = {"results_dir": str(Path(results_dir).resolve()), "quiet": cluster != "debug",
          "data_root": data_root}
    if cluster == "local":
        # Jobs run side by side; one thread each keeps the machine from oversubscribing.
        rt["threads"] = 1
    rt.update({k: v for k, v in extra.items() if v is not None})
    return rt

