"""Table spec → jobs: *what* runs (where it runs is ``harness.run.launch``'s business).

One pretraining job per table row and one evaluation job per (row, evaluation, dataset),
each keyed by the hash of its resolved config, each writing one JSON. A job whose result
file exists is done and is never submitted again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import config as C
from harness.checkpoints.exchange import imported_config, job_config
from harness.config import presets
from harness.config.evaluations import EVALUATIONS, sections_read
from harness.errors import HarnessError
from harness.eval.metrics import metrics_problem
from harness.io import StorageError, try_read_json, write_json
from harness.provenance import code_version


@dataclass
class Job:
    kind: str  # "pretrain" | "eval"
    # Everything the job computes from: the run's resolved config (+ runtime) and, for an
    # evaluation, exactly the sections it reads — nothing is looked up again where it runs.
    cfg: dict
    run_dir: str
    result: str  # the JSON this job writes when it succeeds
    evaluation: str | None = None
    dataset: str | None = None
    deps: list = field(default_factory=list)  # results this job needs first
    spec: dict | None = None  # an evaluation's hashed identity (eval_spec)
    scale: str = ""  # the preset's scale in words, and the overrides that changed it

    @property
    def name(self) -> str:
        rid = C.run_id(self.cfg)
        return rid if self.kind == "pretrain" else f"{rid}:{self.evaluation}-{self.dataset}"

    def done(self) -> bool:
        return Path(self.result).exists()


def eval_spec(cfg: dict, evaluation: str, dataset: str) -> dict:
    """What an evaluation's result depends on beyond its run: every config section it reads
    (evaluation recipes merged from code defaults, preset and overrides) and its evaluator's
    version, which a change of the evaluator's math bumps."""
    from harness.eval.registry import evaluator_version

    return {
        "evaluation": evaluation,
        "dataset": dataset,
        "version": evaluator_version(evaluation, dataset),
        "sections": {s: cfg[s] for s in sections_read(evaluation, dataset)},
    }


def eval_job_config(cfg: dict, evaluation: str, dataset: str) -> dict:
    """The run's config without the evaluation sections this evaluation does not read."""
    keep = set(sections_read(evaluation, dataset))
    return {k: v for k, v in cfg.items() if k not in EVALUATIONS or k in keep}


def eval_result_path(run_dir: Path, spec: dict) -> Path:
    h = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return Path(run_dir) / "eval" / f"{spec['evaluation']}-{spec['dataset']}-{h}.json"


def plan(
    spec,
    preset: str,
    results_dir: Path,
    seed: int = 0,
    runtime: dict | None = None,
    only: str | None = None,
    overrides: Sequence[str] = (),
) -> list[Job]:
    """Every job of a table spec at a preset: each config resolved completely here, once."""
    results_dir = Path(results_dir).resolve()
    changed = [o for o in overrides if not o.strip().startswith("runtime.")]
    scale = presets.get(preset)["scale"] + (f" (overrides: {' '.join(changed)})" if changed else "")
    jobs: list[Job] = []
    for method in spec.rows:
        stored = imported_config(results_dir, method)
        if stored is not None:
            # An imported checkpoint (harness import): its run folder is its name, its
            # pretraining is done; only its evaluations are planned, at this preset's recipes.
            cfg = C.with_runtime(job_config(stored, preset, seed, overrides), **(runtime or {}))
            run_dir = results_dir / "runs" / method
            row_scale = f"{scale}; {method}: imported, its own ViT at this preset's image size"
            pre = Job(
                "pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"), scale=row_scale
            )
            if not pre.done():
                raise HarnessError(
                    f"{run_dir} is an import without pretrain.json: delete the folder and run "
                    f"harness import again"
                )
        else:
            cfg = C.with_runtime(
                C.resolve(method, preset, seed, overrides=overrides), **(runtime or {})
            )
            run_dir = results_dir / "runs" / C.run_id(cfg)
            pre = Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"), scale=scale)
            jobs.append(pre)
        if only == "pretrain":
            continue
        for evaluation, dataset in spec.evaluations:
            es = eval_spec(cfg, evaluation, dataset)
            if stored is not None:
                # One folder serves every preset: the result is keyed by the preset's config too.
                es["run"] = C.config_hash(cfg)
            job_cfg = eval_job_config(cfg, evaluation, dataset)
            res = eval_result_path(run_dir, es)
            jobs.append(
                Job(
                    "eval",
                    job_cfg,
                    str(run_dir),
                    str(res),
                    evaluation,
                    dataset,
                    [pre.result],
                    es,
                    pre.scale,
                )
            )
    return jobs


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


def read_result(job: Job) -> tuple[dict | None, str | None]:
    """The job's result and None, or None and why it is no result of this job: it cannot be
    read (cut short), or it names another run, config or evaluation (a file copied in from
    elsewhere). Either way ``harness run`` sets it aside and computes the job again."""
    rec = try_read_json(job.result)
    if rec is None:
        return None, f"cannot read {job.result}"
    if not isinstance(rec, dict):
        return None, f"{job.result} holds a JSON {type(rec).__name__}, not a result record"
    if getattr(job, "cfg", None) is None:  # a job known from its record only (bare status)
        why = result_problem(job.kind, job.result, rec)
        return (None, why) if why else (rec, None)
    rid, h = C.run_id(job.cfg), C.config_hash(job.cfg)
    if rec.get("run_id") != rid or rec.get("config_hash") != h:
        return None, (
            f"{job.result} is the result of run {rec.get('run_id')} (config "
            f"{rec.get('config_hash')}), not of {rid} (config {h})"
        )
    if job.kind == "eval" and (
        not isinstance(rec.get("eval_spec"), dict)
        or eval_result_path(job.run_dir, rec["eval_spec"]).name != Path(job.result).name
    ):
        return None, f"{job.result} holds another evaluation's result than {job.name}"
    if why := result_problem(job.kind, job.result, rec):
        return None, why
    return rec, None


def result_problem(kind: str, result, rec: dict) -> str | None:
    """Why a readable result file is still no finished job, or None: an evaluation needs
    finite metrics in their ranges; a pretraining needs its checkpoint, saved at the final
    step, still the one that pretrain.json recorded (an import has its backbone only)."""
    if kind == "eval":
        absent = [k for k in ("method", "dataset") if not isinstance(rec.get(k), str)]
        why = (
            f"it names no {' or '.join(absent)}" if absent else metrics_problem(rec.get("metrics"))
        )
        return f"{result}: {why}" if why else None
    ckpt = Path(result).parent / "checkpoint.pt"
    if rec.get("imported"):  # a backbone only, at no step: its file is what counts
        return None if ckpt.exists() else f"{result} has no checkpoint.pt beside it"
    total = rec.get("total_steps")
    if not isinstance(total, int) or total <= 0 or rec.get("steps") != total:
        return f"{result} records {rec.get('steps')} of {total} steps, not a finished training"
    if not ckpt.exists():
        return f"{result} has no checkpoint.pt beside it"
    saved = rec.get("checkpoint")
    if not isinstance(saved, dict) or saved.get("step") != total:
        return f"{result} does not record a checkpoint saved at its final step {total}"
    if saved.get("bytes") != ckpt.stat().st_size:
        return (
            f"{ckpt} is {ckpt.stat().st_size} bytes, not the {saved.get('bytes')} of the "
            f"final checkpoint {result} recorded"
        )
    return None


def load_results(jobs: list[Job], warn=None) -> list[dict]:
    """The results of the finished evaluations; one that is no result is left out and named
    through ``warn(message, job)`` (``harness run`` recomputes it)."""
    out = []
    for j in jobs:
        if j.kind != "eval" or not j.done():
            continue
        rec, problem = read_result(j)
        if rec is None:
            if warn:
                warn(f"{problem}: left out; `harness run` recomputes it", j)
            continue
        out.append(rec)
    return out


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
