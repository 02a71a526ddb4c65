"""Each table's caption states its protocol, generated from the config sections its results
recorded; a table whose rows were computed under different protocols is refused."""

import shutil
from dataclasses import replace

import pytest

import tables
from harness.errors import HarnessError
from harness.report import collect
from harness.report.latex import compile_check
from harness.run import jobs, launch

# Barlow Twins rows sweep other lrs than MoCo-v3's (as config/eval.yaml sets them): a
# per-row difference the caption lists by base, not a mix.
LRS = ["linear.base_lrs.barlow_twins=[0.25,1.5]"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    results = tmp_path_factory.mktemp("captions")
    rt = jobs.default_runtime("debug", str(results), None)
    t2 = replace(tables.load("table2"), rows=("moco_v3", "barlow_twins"))
    t7 = replace(tables.load("table7"), rows=("moco_v3",))
    plans = {s.name: (s, jobs.plan(s, "micro", results, 0, rt, overrides=LRS)) for s in (t2, t7)}
    for _, p in plans.values():
        assert launch.run(p, "debug", results)["failed"] == 0
    return results, rt, plans


def _report(results, spec, name, tmp_path):
    out = tmp_path / name
    collect.report([name], "micro", results, out, rows=lambda s: spec, overrides=LRS)
    return (out / f"{name}.md").read_text(), (out / f"{name}.tex").read_text()


@pytest.mark.slow
def test_table2_caption_states_the_linear_protocol(done, tmp_path):
    results, _, plans = done
    md, tex = _report(results, plans["table2"][0], "table2", tmp_path)
    caption = md.split("Protocol: ", 1)[1].split(" Generated", 1)[0]
    assert caption.startswith(
        "linear on ImageNet-1k, ImageNet-Sketch, ImageNet-V2, ImageNet-R: last-4 [CLS], "
        "SGD batch 32, 5 epochs cosine"
    )
    assert "base lr 0.5/1.5 (MoCo-v3), base lr 0.25/1.5 (Barlow Twins)" in caption
    assert "best of epochs 4–5 on val, the split reported (as SER's code)" in caption
    assert "fp16 autocast" in caption
    assert r"best of epochs 4--5 on val" in tex  # LaTeX's en dash
    if shutil.which("pdflatex"):
        compile_check(out := tmp_path / "table2" / "table2.tex")
        assert out.exists()


def test_table7_caption_states_the_official_preprocessing(done, tmp_path):
    results, _, plans = done
    md, _ = _report(results, plans["table7"][0], "table7", tmp_path)
    caption = md.split("Protocol: ", 1)[1]
    assert "linear on ImageNet-C:" in caption
    assert "stored images, centre crop, no resize (hendrycks/robustness test.py)" in caption


def test_a_table_mixing_protocols_is_refused_in_one_line(done):
    results, rt, plans = done
    spec, plan = plans["table2"]
    moco = [j for j in plan if j.cfg["method"] == "moco_v3"]
    other = jobs.plan(
        replace(spec, rows=("barlow_twins",)),
        "micro",
        results,
        0,
        rt,
        overrides=[*LRS, "linear.select_on=heldout", "linear.heldout=0.25"],
    )
    assert launch.run(other, "debug", results)["failed"] == 0
    with pytest.raises(HarnessError) as e:
        collect.table_protocol(spec, moco + other)
    msg = str(e.value)
    assert "\n" not in msg and "table2 mixes protocols" in msg
    assert "moco_v3 has 'best of epochs 4–5 on val" in msg and "held-out 25 % of train" in msg
    # The same rows under one protocol are fine.
    assert collect.table_protocol(spec, plan)


def test_every_evaluation_describes_its_paper_protocol():
    from harness import config as C
    from harness.config.evaluations import sections_read
    from harness.eval.protocols import describe
    from harness.eval.registry import EVALUATORS

    cfg = C.resolve("moco_v3+ser", "paper")
    for evaluation, dataset in EVALUATORS:
        sections = {s: cfg[s] for s in sections_read(evaluation, dataset)}
        fields = describe(evaluation, dataset, sections, "moco_v3")
        assert fields or evaluation in ("tsne", "params"), (evaluation, dataset)
        assert all(isinstance(t, str) and t for _, t in fields)
    line = ", ".join(t for _, t in describe("linear", "imagenet", cfg, "moco_v3"))
    assert "base lr 3/10" in line and "best of epochs 41–50 on val, the split reported" in line
    assert "SGD batch 2048, 50 epochs cosine" in line and "features cached" not in line
