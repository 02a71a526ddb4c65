"""Table 2 end to end at the micro preset: spec → jobs → runs → results → report."""

import json
import subprocess
import sys

import pytest

import tables
from harness.run import jobs


def harness(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_plan_keys_results_by_config_hash(tmp_path):
    spec = tables.load("table2")
    a = jobs.plan(spec, "micro", tmp_path)
    b = jobs.plan(spec, "micro", tmp_path)
    assert [j.result for j in a] == [j.result for j in b]
    # 6 rows; ImageNet, Sketch, V2 and R evaluations each.
    assert len(a) == 30 and sum(j.kind == "pretrain" for j in a) == 6
    assert len({j.result for j in a}) == 30
    seeded = jobs.plan(spec, "micro", tmp_path, seed=1)
    assert not {j.result for j in a} & {j.result for j in seeded}
    for j in a:
        if j.kind == "eval":
            assert j.deps and j.deps[0].endswith("pretrain.json")


def _check_results(results):
    recs = [json.loads(p.read_text()) for p in results.glob("runs/*/eval/*.json")]
    assert len(recs) == 24
    assert {r["method"] for r in recs} == set(tables.load("table2").rows)
    assert {r["dataset"] for r in recs} == {
        "imagenet",
        "imagenet_sketch",
        "imagenet_v2",
        "imagenet_r",
    }
    for r in recs:
        assert 0 <= r["metrics"]["top1"] <= r["metrics"]["top5"] <= 100
        assert r["preset"] == "micro"


@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_run_table2_then_nothing_to_submit_then_report(cluster, tmp_path):
    res = tmp_path / "results"
    p = harness("run", "table2", "--preset", "micro", "--cluster", cluster, "--results", str(res))
    assert p.returncode == 0, p.stderr[-2000:]
    _check_results(res)
    again = harness(
        "run", "table2", "--preset", "micro", "--cluster", cluster, "--results", str(res)
    )
    assert again.returncode == 0
    assert "nothing to submit" in again.stdout
    assert json.loads(again.stdout.strip().splitlines()[-1])["submitted"] == 0
    rep = harness("report", "table2", "--results", str(res), "--check-tex")
    assert rep.returncode == 0, rep.stderr
    tex = (res / "report" / "micro" / "table2.tex").read_text()
    assert "micro" in tex and "MoCo-v3" in tex


@pytest.mark.slurm
def test_run_table2_on_the_local_slurm_cluster(local_slurm, tmp_path):
    res = tmp_path / "results"
    p = harness(
        "run",
        "table2",
        "--preset",
        "micro",
        "--cluster",
        "slurm",
        "--profile",
        "local",
        "--results",
        str(res),
        "--timeout",
        "600",
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    _check_results(res)
    again = harness(
        "run", "table2", "--preset", "micro", "--cluster", "slurm", "--results", str(res)
    )
    assert again.returncode == 0
    assert "nothing to submit" in again.stdout
