"""Figures 3–5 at the micro preset: jobs run, records hold what the plot needs, PNG + PDF exist."""

import json
from dataclasses import replace

import pytest

import tables
from harness.report import report
from harness.run import jobs, launch


def _run(spec, results):
    plan = jobs.plan(spec, "micro", results, 0, jobs.default_runtime("debug", str(results), None))
    assert launch.run(plan, "debug", results, log=lambda *_: None)["failed"] == 0


@pytest.mark.slow
def test_figures_render_to_png_and_pdf(tmp_path):
    _run(tables.load("figure4"), tmp_path)
    _run(tables.load("figure5"), tmp_path)
    _run(
        replace(tables.load("figure3"), rows=("moco_v3+ser@layer2", "moco_v3+ser@layer3@cls5")),
        tmp_path,
    )
    recs = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/eval/tsne-*.json")]
    assert {r["dataset"] for r in recs} == {"imagenet", "imagenet_c"}
    for r in recs:
        m = r["metrics"]
        assert len(m["points"]) == len(m["labels"]) == m["n_points"] > 0
        assert set(m["labels"]) <= set(m["classes"]) and len(m["points"][0]) == 2
    paths = report(["figure3", "figure4", "figure5"], "micro", tmp_path, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(
        f"figure{i}.{e}" for i in (3, 4, 5) for e in ("png", "pdf")
    )
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")
        assert p.stat().st_size > 5000
