"""Table 2 end to end at the micro preset: spec → jobs → runs → results → report."""

import json
from pathlib import Path

import pytest

import tables
from harness.run import jobs
from tests.helpers import harness


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


@pytest.mark.slow
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


# ---- a job carries its whole config ---------------------------------------------------------


def _results(plan) -> dict:
    return {(j.cfg["method"], j.evaluation, j.dataset): j.result for j in plan}


def test_an_evaluator_default_in_code_keys_its_results(tmp_path, monkeypatch):
    from harness.config.evaluations import EVALUATIONS
    from harness.eval.mlp import MLP_RECIPE

    spec = tables.load("table3")
    before = _results(jobs.plan(spec, "micro", tmp_path))
    assert MLP_RECIPE is EVALUATIONS["mlp"]  # the evaluator's default is the one keyed
    monkeypatch.setitem(MLP_RECIPE, "weight_decay", 1e-4)  # a default nobody overrides
    after = _results(jobs.plan(spec, "micro", tmp_path))
    changed = {k for k in before if before[k] != after[k]}
    assert changed and {e for _, e, _ in changed} == {"mlp"}
    # The pretraining runs are the same runs.
    assert all(before[k] == after[k] for k in before if k[1] is None)


def test_the_linear_section_keys_the_evaluations_that_read_it(tmp_path):
    spec = tables.load("table3")
    base = _results(jobs.plan(spec, "micro", tmp_path))
    other = _results(jobs.plan(spec, "micro", tmp_path, overrides=["linear.n_last=1"]))
    changed = {key[1] for key in base if base[key] != other[key]}
    # k-NN and the MLP probe extract features as the linear probe does; fine-tuning does not.
    assert changed == {"knn", "mlp"}


def test_an_evaluator_version_keys_its_results(tmp_path, monkeypatch):
    from harness.eval import knn

    spec = tables.load("table3")
    before = _results(jobs.plan(spec, "micro", tmp_path))
    monkeypatch.setattr(knn, "VERSION", knn.VERSION + 1)
    after = _results(jobs.plan(spec, "micro", tmp_path))
    assert {k[1] for k in before if before[k] != after[k]} == {"knn"}


def test_jobs_execute_from_what_they_carry(tmp_path, monkeypatch):
    """Planned once; executed with presets and config resolution unavailable, as on a node
    whose code would read them differently."""
    import harness.config as C
    from harness.config import presets

    spec = tables.load("table3")
    plan = [
        j
        for j in jobs.plan(spec, "micro", tmp_path, runtime=_runtime(tmp_path))
        if j.cfg["method"] == "moco_v3"
    ]

    def refuse(*_, **__):
        raise AssertionError("read presets or resolved a config at execution time")

    monkeypatch.setattr(presets, "get", refuse)
    monkeypatch.setattr(C, "resolve", refuse)
    for j in plan:
        jobs.execute(j)
    recs = [json.loads((tmp_path / j.result).read_text()) for j in plan if j.kind == "eval"]
    assert {r["evaluation"] for r in recs} == {"mlp", "finetune", "knn"}
    pre = json.loads((tmp_path / plan[0].result).read_text())
    assert pre["code"]["version"] and pre["code"]["commit"]  # the code that trained it
    for r in recs:
        assert r["code"]["version"] and r["code"]["commit"]  # the code that computed it
        assert r["eval_spec"]["version"] >= 1
        assert ("linear" in r["eval_spec"]["sections"]) == (r["evaluation"] != "finetune")


def _runtime(results) -> dict:
    return jobs.default_runtime("debug", str(results), None, quiet=True)


def test_a_method_version_keys_its_runs(tmp_path, monkeypatch):
    from methods.registry import ADDONS, BASES

    spec = tables.load("table2")
    before = {j.cfg["method"]: j.run_dir for j in jobs.plan(spec, "micro", tmp_path)}
    monkeypatch.setattr(ADDONS["ser"], "version", ADDONS["ser"].version + 1)
    after = {j.cfg["method"]: j.run_dir for j in jobs.plan(spec, "micro", tmp_path)}
    assert {m for m in before if before[m] != after[m]} == {m for m in before if "+ser" in m}
    monkeypatch.setattr(BASES["dino"], "version", BASES["dino"].version + 1)
    again = {j.cfg["method"]: j.run_dir for j in jobs.plan(spec, "micro", tmp_path)}
    assert {m for m in after if after[m] != again[m]} == {"dino", "dino+ser"}


def test_status_shows_a_detection_jobs_iterations_and_time_left(tmp_path):
    """From the trainer's iterations.jsonl: the last iteration of the total, and a rate from
    the last process's stretch only (its seconds restart when a requeued job resumes)."""
    from harness.run.status import progress

    spec = tables.load("table6")
    plan = jobs.plan(spec, "micro", tmp_path, overrides=["detection.iterations=20"])
    job = next(j for j in plan if j.evaluation == "detection")
    total = job.cfg["detection"]["iterations"]
    out = Path(job.run_dir) / "eval" / "detection-coco-0"
    out.mkdir(parents=True)
    first = [{"iter": i, "loss": 1.0, "s": 10.0 * (i + 1)} for i in range(3)]  # 0.1 it/s
    after = [{"iter": 3 + i, "loss": 1.0, "s": 1.0 + i} for i in range(total - 4)]  # 1 it/s
    (out / "iterations.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in first + after) + '{"iter": 9'
    )
    got = progress(job)
    assert got["step"] == total - 1 and got["total"] == total
    assert got["eta_s"] == pytest.approx(1.0)
