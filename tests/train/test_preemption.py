"""Preemption on the real local Slurm cluster: a pretraining job warned mid-run saves its
step, is requeued, resumes, and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from harness import config as C
from harness.run import launch
from harness.run.jobs import Job
from harness.run.profiles import load_profile
from harness.train import pretrain
from tests.helpers import wait_for_slurm

# Long enough that what is left after step 20 outlasts Slurm's kill grace (KillWait 5 s plus
# srun's wait, slurm/local-up.sh): at about 25 micro steps a second, 120 steps left a requeued
# job time to finish before SIGKILL, and it never resumed.
STEPS = 360


def _job(results: Path, ckpt_every: int = 10_000) -> Job:
    # Many short steps; by default no periodic checkpoint before the end, so a resumed run
    # can only start from the step saved on the warning.
    rt = {"results_dir": str(results), "quiet": True, "threads": 1, "ckpt_every": ckpt_every}
    cfg = C.with_runtime(C.resolve("moco_v3+ser", "micro", max_steps=STEPS, epochs=100), **rt)
    run_dir = results / "runs" / C.run_id(cfg)
    return Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))


def _steps_logged(run_dir: Path) -> int:
    try:
        return len(Path(run_dir, "log.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _events(run_dir: Path) -> list[dict]:
    path = Path(run_dir, "events.jsonl")
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The same job run uninterrupted in this process, one thread as on the cluster."""
    results = tmp_path_factory.mktemp("straight")
    job = _job(results)
    root = C.data_root(job.cfg, results)
    C.ensure_data(job.cfg, root)
    threads = torch.get_num_threads()
    try:
        pretrain(job.cfg, Path(job.run_dir), root)
    finally:
        torch.set_num_threads(threads)
    return torch.load(Path(job.run_dir) / "checkpoint.pt", weights_only=False)["model"]


def _submit(results: Path, ckpt_every: int) -> tuple[Job, str]:
    job = _job(results, ckpt_every)
    launch.run([job], "slurm", results, load_profile("local"), log=lambda *_: None, wait=False)
    rec = json.loads(next((results / "jobs").glob("*.json")).read_text())
    return job, rec["attempts"][-1]["job_id"]


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["submitit-interrupt", "scontrol-requeue"])
def test_interrupted_job_requeues_and_ends_with_uninterrupted_weights(
    how, local_slurm, tmp_path, straight
):
    import submitit

    results = tmp_path / "results"
    # scontrol requeue gives no warning: the run resumes from its last periodic checkpoint.
    job, job_id = _submit(results, 10_000 if how == "submitit-interrupt" else 10)
    wait_for_slurm("training under way", lambda: _steps_logged(job.run_dir) >= 20, 120, job_id)
    if how == "submitit-interrupt":
        # Preemption as submitit simulates it: SIGTERM (ignored), then USR2.
        submitit.SlurmJob(results / "logs" / "%j", job_id)._interrupt()
    else:
        # An administrator's requeue: Slurm kills the job without warning and queues it again.
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    wait_for_slurm("the requeued job's result", lambda: Path(job.result).exists(), 240, job_id)

    resumed = torch.load(Path(job.run_dir) / "checkpoint.pt", weights_only=False)["model"]
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k
    steps = [
        json.loads(ln)["step"] for ln in Path(job.run_dir, "log.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, STEPS + 1))  # each step logged once, across the requeue
    events = _events(Path(job.run_dir))
    if how == "submitit-interrupt":
        # It saved where it was warned (no periodic checkpoint exists before the end) and
        # the requeued run started there, in the same Slurm job.
        warned = [e["step"] for e in events if e["event"] == "preempted"]
        assert len(warned) == 1 and 20 <= warned[0] < STEPS
        assert [e["step"] for e in events if e["event"] == "resumed"] == warned
    else:
        # Killed without warning: it resumed from a periodic checkpoint (every 10 steps).
        assert not any(e["event"] == "preempted" for e in events)
        starts = [e["step"] for e in events if e["event"] == "resumed"]
        assert len(starts) == 1 and starts[0] >= 20 and starts[0] % 10 == 0
    record = json.loads(next((results / "jobs").glob("*.json")).read_text())
    assert len(record["attempts"]) == 1  # requeued by Slurm, not submitted again
