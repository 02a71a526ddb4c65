"""Preemption of a detection job on the real local Slurm cluster: warned mid-training, it
saves the checkpoint of that iteration, is requeued in the same Slurm job, resumes there, and
finishes with one result; every iteration runs once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import config as C
from harness.eval import detection
from harness.run import launch
from harness.run.jobs import Job, eval_job_config, eval_result_path, eval_spec, execute
from harness.run.profiles import load_profile
from tests.helpers import wait_for_slurm
from tests.slurm_fixture import in_ci

ITERATIONS = 40

try:
    import detectron2  # noqa: F401
except ImportError:
    if in_ci():  # `make test` installs it: in CI its absence is a failure, not a skip
        raise
    pytest.skip("detectron2 is not installed (`make detection` builds it)", allow_module_level=True)


def _lines(path: Path) -> list[dict]:
    try:
        return [json.loads(ln) for ln in path.read_text().splitlines()]
    except OSError:
        return []


@pytest.mark.slurm
def test_interrupted_detection_job_resumes_from_its_checkpoint(local_slurm, tmp_path):
    import submitit

    results = tmp_path / "results"
    rt = {"results_dir": str(results), "quiet": True, "threads": 1, "num_workers": 0}
    # No periodic checkpoint before the end: a resumed job can only start from the iteration
    # saved on the warning.
    over = [
        "train.max_steps=1",
        f"detection.iterations={ITERATIONS}",
        "detection.checkpoint_period=10000",
    ]
    cfg = C.with_runtime(C.resolve("moco_v3", "micro", overrides=over), **rt)
    run_dir = results / "runs" / C.run_id(cfg)
    pre = Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))
    execute(pre)  # here, in this process: the cluster runs only the detection job
    spec = eval_spec(cfg, "detection", "coco")
    job = Job(
        "eval",
        eval_job_config(cfg, "detection", "coco"),
        str(run_dir),
        str(eval_result_path(run_dir, spec)),
        "detection",
        "coco",
        [pre.result],
        spec,
    )
    launch.run([pre, job], "slurm", results, load_profile("local"), log=lambda *_: None, wait=False)
    rec = json.loads(next((results / "jobs").glob("*.json")).read_text())
    job_id = rec["attempts"][-1]["job_id"]
    coco = C.dataset_root(job.cfg, results, "coco")
    out = detection.work_dir(run_dir, job.cfg["detection"], coco)

    wait_for_slurm(
        "training under way", lambda: len(_lines(out / "iterations.jsonl")) >= 5, 180, job_id
    )
    # Preemption as submitit simulates it: SIGTERM (ignored), then USR2.
    submitit.SlurmJob(results / "logs" / "%j", job_id)._interrupt()
    wait_for_slurm("the requeued job's result", lambda: Path(job.result).exists(), 300, job_id)

    record = json.loads(Path(job.result).read_text())
    assert set(record["metrics"]) == {"mAP", "mAP50", "mAP75"}
    events = _lines(out / "events.jsonl")
    warned = [e["iter"] for e in events if e["event"] == "preempted"]
    assert len(warned) == 1 and 4 <= warned[0] < ITERATIONS - 1
    assert [e["iter"] for e in events if e["event"] == "resumed"] == [warned[0] + 1]
    iters = [e["iter"] for e in _lines(out / "iterations.jsonl")]
    assert iters == list(range(ITERATIONS))  # each iteration once, across the requeue
    assert json.loads((out / "metrics.json").read_text()) == record["metrics"]
    jobs = json.loads(next((results / "jobs").glob("*.json")).read_text())
    assert len(jobs["attempts"]) == 1  # requeued by Slurm, not submitted again
