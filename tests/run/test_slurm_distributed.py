"""Two tasks of one Slurm job train as one torch.distributed run (gloo, from submitit's
environment): the same weights as two torchrun processes, also when the job is preempted
mid-run and requeued (every rank stops and saves at the same step, then resumes there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import config as C
from harness.run import launch
from harness.run.jobs import Job
from harness.run.profiles import load_profile
from tests.helpers import free_port

STEPS = 100
# DINO: stochastic depth draws from the RNG streams, which the checkpoint must restore.
METHOD = "dino"
TORCHRUN = """
import sys
from pathlib import Path
from harness import config as C
from harness.train import pretrain
results, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = C.with_runtime(C.resolve("{method}", "micro", max_steps={steps}, epochs=100),
                     results_dir=str(results), quiet=True, threads=1, ckpt_every=10_000)
pretrain(cfg, out, C.data_root(cfg, results))
"""


def _job(results: Path) -> Job:
    rt = {"results_dir": str(results), "quiet": True, "threads": 1, "ckpt_every": 10_000}
    cfg = C.with_runtime(C.resolve(METHOD, "micro", max_steps=STEPS, epochs=100), **rt)
    run_dir = results / "runs" / C.run_id(cfg)
    return Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)["model"]


@pytest.fixture(scope="module")
def torchrun_weights(tmp_path_factory):
    """The same run as two local processes under torchrun, uninterrupted."""
    tmp = tmp_path_factory.mktemp("torchrun")
    script = tmp / "train.py"
    script.write_text(TORCHRUN.format(method=METHOD, steps=STEPS))
    cfg = _job(tmp).cfg
    C.ensure_data(cfg, C.data_root(cfg, tmp))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master-port",
            str(free_port()),
            str(script),
            str(tmp),
            str(tmp / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return _weights(tmp / "run" / "checkpoint.pt")


@pytest.mark.slurm
def test_two_task_job_preempted_midway_ends_as_two_uninterrupted_processes(
    local_slurm, tmp_path, torchrun_weights
):
    import submitit

    profile = load_profile("local")
    profile.update(tasks_per_node=2)  # one Slurm job, two ranks, one CPU each
    results = tmp_path / "results"
    job = _job(results)
    launch.run([job], "slurm", results, profile, log=lambda *_: None, wait=False)
    rec = json.loads(next((results / "jobs").glob("*.json")).read_text())
    job_id = rec["attempts"][0]["job_id"]
    log = Path(job.run_dir) / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (log.exists() and len(log.read_text().splitlines()) >= 20):
        assert time.monotonic() < deadline, f"job {job_id} made no progress"
        time.sleep(0.2)
    submitit.SlurmJob(results / "logs" / "%j", job_id)._interrupt()
    deadline = time.monotonic() + 300
    while not Path(job.result).exists():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"job {job_id} did not finish after its requeue")
        time.sleep(0.5)

    events = [
        json.loads(ln) for ln in (Path(job.run_dir) / "events.jsonl").read_text().splitlines()
    ]
    warned = [e["step"] for e in events if e["event"] == "preempted"]
    assert len(warned) == 1 and 20 <= warned[0] < STEPS
    assert [e["step"] for e in events if e["event"] == "resumed"] == warned
    ck = torch.load(Path(job.run_dir) / "checkpoint.pt", weights_only=False)
    assert len(ck["rng"]) == 2  # each rank's own streams were saved
    ours = ck["model"]
    assert ours.keys() == torchrun_weights.keys()
    for k in ours:
        assert torch.equal(ours[k], torchrun_weights[k]), k
    assert len(json.loads(next((results / "jobs").glob("*.json")).read_text())["attempts"]) == 1
