"""The job graph: re-issued runs submit nothing twice, failures are retried up to a limit and
reported with their log, ``harness plan`` prices a table before anything is submitted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tables
from harness.run import jobs, launch, records, status
from harness.run.profiles import load_profile
from tests.helpers import harness


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (results / "jobs").glob("*.json")]


@pytest.mark.slurm
def test_killed_run_reissued_submits_nothing_twice_and_keeps_results(local_slurm, tmp_path):
    res = tmp_path / "results"
    rows = "moco_v3,moco_v3+ser,dino"  # 3 pretrainings + 12 evaluations
    args = [
        "run",
        "table2",
        "--methods",
        rows,
        "--preset",
        "micro",
        "--cluster",
        "slurm",
        "--profile",
        "local",
        "--results",
        str(res),
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Kill it once some results exist and other jobs are still queued or running.
    deadline = time.monotonic() + 300
    while not list(res.glob("runs/*/pretrain.json")):
        assert time.monotonic() < deadline and first.poll() is None, "no result in time"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = {p: p.read_bytes() for p in res.glob("runs/*/*.json")}
    submitted_before = {r["name"]: [a["job_id"] for a in r["attempts"]] for r in _records(res)}
    assert len(submitted_before) >= 3  # every pretraining was queued before the kill
    assert len(done_before) < 15

    again = harness(*args, "--timeout", "600")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    out = again.stdout
    recs = _records(res)
    assert len(recs) == 15
    for r in recs:
        assert len(r["attempts"]) == 1, r  # nobody submitted twice
        assert Path(r["result"]).exists()
        if r["name"] in submitted_before:
            assert [a["job_id"] for a in r["attempts"]] == submitted_before[r["name"]]
    for p, blob in done_before.items():
        assert p.read_bytes() == blob  # finished results untouched
    print(out)
    st = harness("status", "table2", "--methods", rows, "--preset", "micro", "--results", str(res))
    assert st.returncode == 0 and "15 jobs, 15 done" in st.stdout


BOOM = """
from harness.errors import HarnessError
from methods.base import AddOn
from methods.registry import register_addon


@register_addon("boom")
class Boom(AddOn):
    description = "fails in its loss, as a bug would"

    def losses(self, method, batch, online, target, progress):
        raise RuntimeError("boom: the add-on's loss has a bug")


@register_addon("badinput")
class BadInput(AddOn):
    description = "fails as bad input does"

    def losses(self, method, batch, online, target, progress):
        raise HarnessError("bad input: fix the config")
"""


@pytest.mark.slow
def test_status_sees_jobs_run_with_the_debug_cluster(tmp_path):
    """`--cluster debug` runs jobs in its own process; they are recorded all the same, so a
    bare `harness status` lists them, a failed one with its reason."""
    plugin = tmp_path / "boom.py"
    plugin.write_text(BOOM)
    res = tmp_path / "results"
    common = ["--preset", "micro", "--results", str(res)]
    ok = harness(
        "run",
        "table2",
        "--methods",
        "moco_v3",
        "--cluster",
        "debug",
        *common,
        "--only",
        "pretrain",
        "runtime.quiet=true",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = harness(
        "--plugin",
        str(plugin),
        "run",
        "table2",
        "--methods",
        "moco_v3+badinput",
        "--cluster",
        "debug",
        *common,
        "--only",
        "pretrain",
        "runtime.quiet=true",
    )
    assert bad.returncode == 2 and "bad input: fix the config" in bad.stderr
    st = harness("--plugin", str(plugin), "status", "--results", str(res))
    assert st.returncode == 0, st.stderr
    rows = {ln.split()[0]: ln for ln in st.stdout.splitlines() if ln.startswith("moco_v3")}
    assert len(rows) == 2, st.stdout
    assert " done " in next(v for k, v in rows.items() if "badinput" not in k)
    failed = next(v for k, v in rows.items() if "badinput" in k)
    assert " failed " in failed and "bad input: fix the config" in st.stdout


@pytest.mark.slow
def test_failed_job_is_retried_then_reported_with_its_log(tmp_path):
    plugin = tmp_path / "boom.py"
    plugin.write_text(BOOM)
    res = tmp_path / "results"
    common = ["--preset", "micro", "--results", str(res)]
    p = harness(
        "--plugin",
        str(plugin),
        "run",
        "table2",
        "--methods",
        "moco_v3+boom,moco_v3+badinput",
        "--cluster",
        "local",
        "--retries",
        "2",
        *common,
    )
    assert p.returncode == 1, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    # The two pretrainings failed; their 4 evaluations each never ran: blocked, not failed.
    assert (summary["failed"], summary["blocked"], summary["already_done"]) == (2, 8, 0)
    tries = {r["name"].split("-")[0]: len(r["attempts"]) for r in _records(res)}
    assert tries == {"moco_v3_boom": 3, "moco_v3_badinput": 1}  # bad input is not retried
    assert "retry 1/2" in p.stdout and "FAILED moco_v3_boom" in p.stdout
    assert not (res / "logs" / "%j").exists()  # submitit's template is no folder of ours

    st = harness(
        "--plugin",
        str(plugin),
        "status",
        "table2",
        "--methods",
        "moco_v3+boom,moco_v3+badinput",
        *common,
    )
    assert st.returncode == 0, st.stderr
    text = st.stdout
    assert "2 failed" in text and "8 waiting" in text
    assert "FAILED moco_v3_boom-micro" in text and "3 tries" in text
    assert "| RuntimeError: boom: the add-on's loss has a bug" in text
    assert "HarnessError: bad input: fix the config" in text


def test_status_reads_progress_and_time_left_from_the_log(tmp_path):
    spec = tables.load("table2")
    job = jobs.plan(spec, "micro", tmp_path)[0]
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True)
    rows = [{"step": s, "total_steps": 100, "time": 1000.0 + 2 * s} for s in range(1, 41)]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "events.jsonl").write_text(json.dumps({"event": "preempted", "step": 30}) + "\n")
    p = status.progress(job)
    assert (p["step"], p["total"], p["requeues"]) == (40, 100, 1)
    assert p["eta_s"] == pytest.approx(60 * 2.0)  # 60 steps left at 2 s a step
    st = status.job_status(tmp_path, job)
    assert st["state"] == "ready"  # never submitted, nothing in its way
    assert status.job_status(tmp_path, jobs.plan(spec, "micro", tmp_path)[1])["state"] == "waiting"


def test_failure_is_read_from_the_traceback(tmp_path):
    log = tmp_path / "x.err"
    log.write_text(
        "submitit INFO (...) Starting\nTraceback (most recent call last):\n  File x\n"
        "torch.OutOfMemoryError: CUDA out of memory\n"
    )
    f = records.failure(records.Handle("1", "local", str(tmp_path / "none"), str(log)))
    assert f.retry and f.summary == "torch.OutOfMemoryError: CUDA out of memory"
    log.write_text("Traceback\nharness.errors.HarnessError: no such dataset\n")
    assert not records.failure(records.Handle("1", "local", "", str(log))).retry
    log.write_text("")
    assert records.failure(records.Handle("1", "local", "", str(log))).retry  # killed: retry


@pytest.mark.slow
def test_plan_lists_jobs_and_gpu_hours_without_submitting(tmp_path):
    p = harness(
        "plan", "table1", "--preset", "paper", "--profile", "example", "--results", str(tmp_path)
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert sum(" pretrain " in ln for ln in lines) == 7
    # 7 rows × (5 sets of images + the parameter count)
    assert sum(" eval " in ln for ln in lines) == 42
    total = next(ln for ln in lines if ln.startswith("total: 49 jobs"))
    gpu_hours = float(total.split(",")[1].split("GPU-hours")[0].replace(",", ""))
    # ViT-S/16 MoCo-v3, 100 epochs of ImageNet: ~73 GFLOPs per image and step, so ~9.4 EFLOP,
    # ~21 GPU-hours per pretraining at 40 % of an A100's 312 TFLOP/s.
    pre = [ln for ln in lines if ln.startswith("moco_v3-paper") and " pretrain " in ln][0]
    assert 15 < float(pre.split()[4]) < 30
    assert gpu_hours > 7 * 15
    assert not (tmp_path / "jobs").exists()  # nothing submitted
    measured = harness(
        "plan", "table2", "--profile", "example", "--step-time", "1.0", "--results", str(tmp_path)
    )
    assert "62500 steps × 1 s" in measured.stdout  # 100 epochs × 625 steps of 2048


def test_plan_says_when_the_loader_not_the_gpu_bounds_a_job():
    from harness.run import estimate

    prof = load_profile("example")
    jobs_ = [
        j
        for j in jobs.plan(tables.load("table2"), "paper", Path("/nonexistent"))
        if j.kind == "pretrain"
    ][:1]
    gpu = estimate.estimate(jobs_, "paper", prof)[0]
    workers = prof["runtime"]["num_workers"]
    images = 62_500 * 2048 / 8  # per GPU: 100 epochs of 625 steps of 2048 over 8 GPUs
    # The GPU takes images / (hours·3600) per second; a loader that is 10x slower bounds it.
    need = images / (gpu["hours"] * 3600)
    slow = estimate.estimate(jobs_, "paper", prof, loader_img_s=need / workers / 10)[0]
    assert "loader-bound" in slow["basis"]
    assert slow["hours"] == pytest.approx(10 * gpu["hours"], rel=1e-6)
    fast = estimate.estimate(jobs_, "paper", prof, loader_img_s=10 * need / workers)[0]
    assert fast["hours"] == gpu["hours"] and "loader" not in fast["basis"]


def test_profile_eval_section_shapes_evaluation_jobs():
    from harness.run.profiles import job_shape, submitit_parameters

    prof = load_profile("example")
    pre = submitit_parameters(job_shape(prof, "pretrain"))
    ev = submitit_parameters(job_shape(prof, "eval"))
    assert (pre["gpus_per_node"], pre["tasks_per_node"]) == (8, 8)
    assert (ev["gpus_per_node"], ev["tasks_per_node"], ev["timeout_min"]) == (1, 1, 1440)


def test_local_jobs_at_once_fill_the_cores_not_more(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)

    def plan(threads):
        return jobs.plan(
            tables.load("table2"),
            "micro",
            tmp_path,
            runtime={"results_dir": str(tmp_path), "threads": threads},
        )

    assert [launch.local_slots(plan(t)) for t in (1, 4, 32)] == [16, 4, 1]
    assert launch.local_slots([]) == 16


@pytest.mark.slurm
def test_unrecorded_slurm_job_is_adopted_only_by_its_own_results_dir(local_slurm, tmp_path):
    """``harness run`` killed between sbatch and its record: the re-issued run finds the
    queued job by name and adopts it; the same job name from another results dir is not it."""
    from harness import config as C

    def job(results):
        rt = {"results_dir": str(results), "quiet": True, "threads": 1}
        cfg = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=10_000, epochs=10_000), **rt)
        run_dir = results / "runs" / C.run_id(cfg)
        return jobs.Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))

    a, b = tmp_path / "a", tmp_path / "b"
    profile = load_profile("local")
    quiet = dict(log=lambda *_: None, wait=False)
    ids = []
    try:
        assert launch.run([job(a)], "slurm", a, profile, **quiet)["submitted"] == 1
        ids.append(_records(a)[0]["attempts"][0]["job_id"])
        for rec in (a / "jobs").glob("*.json"):
            rec.unlink()  # as if killed before the record was written
        again = launch.run([job(a)], "slurm", a, profile, **quiet)
        assert (again["submitted"], again["attached"]) == (0, 1)
        assert [x["job_id"] for x in _records(a)[0]["attempts"]] == ids
        other = launch.run([job(b)], "slurm", b, profile, **quiet)
        assert (other["submitted"], other["attached"]) == (1, 0)
        ids.append(_records(b)[0]["attempts"][0]["job_id"])
        assert ids[0] != ids[1]
    finally:
        subprocess.run(["scancel", *ids])
