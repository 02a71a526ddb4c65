"""One writer per run folder and per job: two ``harness run`` of one table started together
compute each job once (the second attaches), two trainers never write one run folder, and
state a run would trust blindly (duplicate rows, a corrupt config.yaml, a results path that
is a file) is refused or set aside before any work."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.locks import Lock
from tests.helpers import harness

MICRO = ["--preset", "micro", "--only", "pretrain", "runtime.quiet=true"]


def _start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (results / "jobs").glob("*.json")]


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_two_runs_started_together_compute_each_job_once(tmp_path, cluster):
    res = tmp_path / "results"
    args = ["run", "table2", "--methods", "moco_v3", "--cluster", cluster, "--results", str(res)]
    procs = [_start(*args, *MICRO) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    # One of them computed the pretraining, the other attached to it (or, if it started
    # late, found it done): never both submitted it.
    assert sum(s["submitted"] for s in summaries) == 1, outs
    assert sum(s["attached"] + s["already_done"] for s in summaries) == 1, outs
    (rec,) = _records(res)
    assert len(rec["attempts"]) == 1, rec
    said = "\n".join(outs)
    assert "not submitted again" in said or "not run again" in said or "already" in said


def test_second_trainer_of_a_run_folder_is_refused_in_one_line(tmp_path):
    from harness.train import pretrain

    run_dir = tmp_path / "runs" / "r"
    held = Lock(run_dir / ".train.lock")
    assert held.acquire()
    try:
        with pytest.raises(HarnessError) as e:
            pretrain({"runtime": {}}, run_dir, tmp_path / "data")
    finally:
        held.release()
    msg = str(e.value)
    assert "\n" not in msg and f"run folder {run_dir} is being trained by pid {os.getpid()}" in msg
    assert "wait for it or stop it" in msg
    assert not (run_dir / "config.yaml").exists()  # refused before writing anything


def test_lock_of_a_killed_holder_is_not_stale(tmp_path):
    path = tmp_path / "x.lock"
    code = (
        "import os, sys; from harness.locks import Lock; "
        f"Lock({str(path)!r}).acquire(); print('held', flush=True); os.kill(os.getpid(), 9)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "held" in p.stdout and p.returncode == -9
    assert Lock(path).acquire(blocking=False)


def _pretrain_plan(res: Path, cluster: str = "debug", *overrides: str):
    import tables
    from harness.run import jobs

    spec = tables.load("table2")
    spec = dataclasses.replace(spec, rows=("moco_v3",))
    rt = jobs.default_runtime(cluster, res, None, quiet=True)
    return jobs.plan(
        spec, "micro", res, 0, rt, only="pretrain", overrides=["train.max_steps=2", *overrides]
    )


def test_duplicate_methods_are_refused_in_one_line(tmp_path, capsys):
    from harness.cli import main

    for rows in ("moco_v3,moco_v3", "moco_v3+ser, moco_v3 + ser"):
        rc = main(
            ["run", "table2", "--methods", rows, "--preset", "micro", "--results", str(tmp_path)]
        )
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "twice: name each row once" in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "jobs").exists()


def test_rows_resolving_to_one_run_id_are_refused_before_work(tmp_path):
    from harness.run import launch

    (job,) = _pretrain_plan(tmp_path)
    with pytest.raises(HarnessError, match="two rows plan the same job"):
        launch.run([job, job], "debug", tmp_path, log=lambda _: None)
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    "bad, why",
    [
        ("method: [moco_v3\n  preset: {", "is not YAML"),
        ("- just\n- a list\n", "not a config mapping"),
        (None, "holds another run's config"),
    ],
)
def test_corrupt_config_yaml_sets_the_run_folder_aside_and_recomputes(tmp_path, bad, why):
    import yaml

    from harness.run import launch

    res = tmp_path / "results"
    (job,) = _pretrain_plan(res)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True)
    if bad is None:  # a mapping, but another run's (a copied-in folder)
        other = {**job.cfg, "seed": job.cfg["seed"] + 1}
        bad = yaml.safe_dump(other)
    (run_dir / "config.yaml").write_text(bad)
    (run_dir / "pretrain.json").write_text('{"status": "done"}')  # trusted only with its config
    said = []
    summary = launch.run([job], "debug", res, log=said.append)
    assert summary["submitted"] == 1, said
    (line,) = [s for s in said if "set aside" in s or "moved to" in s]
    assert why in line and "recomputing" in line and "\n" not in line
    aside = run_dir.with_name(run_dir.name + ".corrupt")
    assert (aside / "config.yaml").read_text() == bad
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["method"] == "moco_v3"
    assert (run_dir / "checkpoint.pt").exists()
    assert launch.corrupt_config(job) is None


def test_corrupt_config_yaml_read_by_a_job_is_one_line_bad_input(tmp_path):
    from harness.config import write_config
    from harness.config.build import load_trained

    (tmp_path / "config.yaml").write_text("a: [unclosed\n")
    for read in (
        lambda: write_config(tmp_path, {"method": "moco_v3"}),
        lambda: load_trained(tmp_path),
    ):
        with pytest.raises(HarnessError) as e:
            read()
        assert "\n" not in str(e.value) and "is not a config" in str(e.value)


@pytest.mark.slow
def test_results_folder_that_is_a_file_is_refused(tmp_path, capsys):
    from harness.cli import main

    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    p = harness("status", env={"HARNESS_RESULTS": str(f / "sub")})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"HARNESS_RESULTS={f / 'sub'} is under {f}, a file, not a folder" in p.stderr
    assert main(["status", "--results", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--results={f} is a file, not a folder" in err
    assert f.read_text() == "not a folder"


def test_debug_and_local_clusters_train_the_same_weights(tmp_path):
    import torch

    from harness.config import read_checkpoint
    from harness.train import pretrain

    data_root = None
    weights = []
    for cluster in ("debug", "local"):
        res = tmp_path / cluster
        (job,) = _pretrain_plan(res, cluster)
        from harness import config as C

        data_root = C.data_root(job.cfg, res)
        C.ensure_data(job.cfg, data_root)
        pretrain(job.cfg, Path(job.run_dir), data_root)
        weights.append(
            read_checkpoint(Path(job.run_dir) / "checkpoint.pt", job.cfg, "cpu")["model"]
        )
    a, b = weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
