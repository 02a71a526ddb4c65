"""Table 1's transfer columns end to end at the micro preset: the ImageNet head trained once and
read on V2 / Sketch / R through their readers, and 3DIEBench's own probe, on fixture trees."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tables
from harness import config as C
from harness.config import load_trained
from harness.data import ImageFolderDataset
from harness.data.readers import ImageNetR, ImageNetV2
from harness.eval.imagenet_head import imagenet_head
from harness.eval.transforms import eval_transform
from harness.run import jobs, launch


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    results = tmp_path_factory.mktemp("t1")
    spec = replace(tables.load("table1"), rows=("moco_v3",))
    rt = jobs.default_runtime("debug", str(results), None)
    plan = jobs.plan(spec, "micro", results, 0, rt)
    assert launch.run(plan, "debug", results)["failed"] == 0
    recs = {
        json.loads(p.read_text())["dataset"]: json.loads(p.read_text())
        for p in results.glob("runs/*/eval/linear-*.json")
    }
    return results, plan, recs


def _manual(results, plan, reader_cls, dataset):
    """The column recomputed by hand: head(features) against the reader's labels."""
    cfg = C.with_runtime(plan[0].cfg, results_dir=str(results))
    run_dir = Path(plan[0].run_dir)
    root = C.data_root(cfg, results)
    full = {
        **cfg,
    }
    head = imagenet_head(run_dir, root, full)
    backbone = load_trained(run_dir).eval_backbone().eval()
    tf = eval_transform(cfg["model"]["img_size"], full["linear"]["resize"])
    reader = reader_cls(
        C.dataset_root(cfg, results, dataset),
        classes=ImageFolderDataset(root, "train").classes,
        transform=tf,
    )
    hits = 0
    for x, y in reader:
        with torch.no_grad():
            logits = head(backbone.features(x[None], n_last=full["linear"]["n_last"]))[0]
        if dataset == "imagenet_r":
            logits = reader.mask_logits(logits[None])[0]
        hits += int(logits.argmax()) == y
    return 100.0 * hits / len(reader), reader


@pytest.mark.slow
def test_every_column_has_a_result(done):
    _, _, recs = done
    assert set(recs) == {"imagenet", "imagenet_sketch", "imagenet_v2", "imagenet_r", "3diebench"}
    for r in recs.values():
        assert 0 <= r["metrics"]["top1"] <= r["metrics"]["top5"] <= 100


def test_v2_uses_integer_folder_labels_and_the_imagenet_head(done):
    results, plan, recs = done
    top1, reader = _manual(results, plan, ImageNetV2, "imagenet_v2")
    assert recs["imagenet_v2"]["metrics"]["top1"] == pytest.approx(top1, abs=1e-4)
    assert recs["imagenet_v2"]["metrics"]["n_images"] == len(reader)
    # One head for all transfer columns: trained once, then read from disk.
    heads = list(Path(plan[0].run_dir).glob("eval/linear-head-*.pt"))
    assert len(heads) == 1


def test_r_predicts_only_its_classes(done):
    results, plan, recs = done
    top1, reader = _manual(results, plan, ImageNetR, "imagenet_r")
    assert recs["imagenet_r"]["metrics"]["top1"] == pytest.approx(top1, abs=1e-4)
    assert reader.mask.sum() < len(reader.mask)


def test_iebench_probe_groups_views_by_object(done):
    _, _, recs = done
    r = recs["3diebench"]["metrics"]
    assert r["n_objects"] > 0 and 0 <= r["top1"] <= 100
