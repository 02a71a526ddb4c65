"""A planned job's result file read back: whether it is this job's finished result."""

from __future__ import annotations

from pathlib import Path

from harness import config as C
from harness.eval.metrics import metrics_problem
from harness.io import try_read_json
from harness.run.planning import Job, eval_result_path


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
