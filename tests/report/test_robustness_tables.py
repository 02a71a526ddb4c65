"""Tables 7 / 8 (ImageNet-C / -P) end to end at the micro preset, on the fixture trees."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import tables
from harness import config as C
from harness.data.readers import CORRUPTIONS, PERTURBATIONS
from harness.errors import HarnessError
from harness.report import report
from harness.run import jobs, launch


def _run(results, name):
    spec = replace(tables.load(name), rows=("moco_v3",))
    plan = jobs.plan(spec, "micro", results, 0, jobs.default_runtime("debug", str(results), None))
    return spec, plan, launch.run(plan, "debug", results, log=lambda *_: None)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust")
    for name in ("table7", "table8"):
        assert _run(out, name)[2]["failed"] == 0
    return out


def _metrics(results, dataset):
    (rec,) = [
        json.loads(p.read_text()) for p in results.glob(f"runs/*/eval/linear-{dataset}-*.json")
    ]
    return rec["metrics"]


@pytest.mark.slow
def test_imagenet_c_reports_every_corruption_and_their_mean(results):
    m = _metrics(results, "imagenet_c")
    per = [m[f"{c}/top1"] for c in CORRUPTIONS]
    assert m["avg/top1"] == pytest.approx(sum(per) / len(per))
    assert all(0 <= m[f"{c}/top1"] <= m[f"{c}/top5"] <= 100 for c in CORRUPTIONS)
    assert "mCE" in m


def test_imagenet_p_reports_frames_accuracy_and_flip_probability(results):
    m = _metrics(results, "imagenet_p")
    for p in PERTURBATIONS:
        assert 0 <= m[f"{p}/top1"] <= 100 and 0 <= m[f"{p}/flip_prob"] <= 100
    assert m["avg/top1"] == pytest.approx(sum(m[f"{p}/top1"] for p in PERTURBATIONS) / 14)


def test_report_fills_every_column(results, tmp_path):
    paths = report(
        ["table7", "table8"],
        "micro",
        results,
        tmp_path,
        rows=lambda s: replace(s, rows=("moco_v3",)),
    )
    for p in paths:
        if p.suffix == ".csv":
            df = pd.read_csv(p)
            measured = df[df["method"] == "moco_v3"] if "method" in df else df
            assert len(measured) and measured.filter(like="value").notna().all().all()


def test_a_missing_severity_stops_the_evaluation(results, tmp_path):
    spec, plan, _ = _run(results, "table7")
    job = next(j for j in plan if j.kind == "eval")
    cfg = job.cfg
    root = C.dataset_root(cfg, Path(cfg["runtime"]["results_dir"]), "imagenet_c")
    broken = tmp_path / "imagenet_c"
    shutil.copytree(root, broken)
    shutil.rmtree(broken / "fog" / "3")
    from harness.eval.imagenet_c import imagenet_c

    full = {
        **cfg,
    }
    with pytest.raises(HarnessError) as e:
        imagenet_c(
            Path(job.run_dir),
            C.data_root(cfg, Path(cfg["runtime"]["results_dir"])),
            full,
            broken,
            quiet=True,
        )
    assert "fog" in str(e.value) and "3" in str(e.value) and "\n" not in str(e.value)
