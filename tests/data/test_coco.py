"""The COCO-2017-layout fixture (several shapes per image, exact boxes) and its reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.data import fixtures as fx
from harness.data import synthetic
from harness.data.readers import READERS
from harness.data.readers.coco import COCO
from harness.errors import HarnessError

SMALL = fx.Config(coco_size=64, coco_train=6, coco_val=3, coco_objects=3)


@pytest.fixture
def tree(tmp_path):
    return fx.write_fixtures(tmp_path, SMALL, only=["coco"])["coco"]


def test_fixture_is_coco_layout_with_shape_categories(tree):
    for split, n in (("train2017", 6), ("val2017", 3)):
        doc = json.loads((tree / "annotations" / f"instances_{split}.json").read_text())
        assert [c["name"] for c in doc["categories"]] == list(synthetic.SHAPES)
        assert [c["id"] for c in doc["categories"]] == [1, 3, 5, 7, 9]  # with gaps, as COCO's
        assert len(doc["images"]) == n
        for im in doc["images"]:
            assert (tree / split / im["file_name"]).is_file()
        ids = {im["id"] for im in doc["images"]}
        assert {a["image_id"] for a in doc["annotations"]} <= ids
        assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
    assert COCO.inventory(tree).problems == []
    assert READERS["coco"] is COCO


def test_boxes_are_exact_around_the_objects():
    """Bright object pixels lie inside the boxes only, each box holds its object, and the box
    is the polygon's extent (every side touches a vertex)."""
    cfg = fx.Config(coco_size=128, coco_objects=4)
    n_objects = 0
    for i in range(12):
        img, objects = fx.coco_image(cfg, 0, i)
        assert 1 <= len(objects) <= 4
        n_objects += len(objects)
        bright = img.mean(axis=2) > 0.62  # objects are light (≥ 0.65), backgrounds dark
        inside = np.zeros_like(bright)
        for o in objects:
            x, y, w, h = o["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and w > 8 and h > 8
            x0, y0, x1, y1 = int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))
            inside[y0:y1, x0:x1] = True
            assert bright[y0:y1, x0:x1].any()
            poly = np.array(o["segmentation"][0]).reshape(-1, 2)
            assert poly[:, 0].min() == pytest.approx(x, abs=0.01)
            assert poly[:, 1].max() == pytest.approx(y + h, abs=0.01)
            assert 0 < o["area"] <= w * h
        assert not (bright & ~inside).any()
    assert n_objects > 12  # several objects per image


def test_same_parameters_same_bytes(tmp_path):
    a = fx.write_fixtures(tmp_path / "a", SMALL, only=["coco"])["coco"]
    b = fx.write_fixtures(tmp_path / "b", SMALL, only=["coco"])["coco"]
    for rel in ("annotations/instances_val2017.json", "val2017/000001000001.jpg"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_data_check_reports_counts_and_the_first_problem(tree, capsys):
    assert main(["data", "check", "coco", "--root", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "train2017 images: 6" in out and "val2017 categories: 5" in out

    (tree / "val2017" / "000001000002.jpg").unlink()
    inv = COCO.inventory(tree)
    assert len(inv.problems) == 1 and "000001000002.jpg" in inv.problems[0]
    with pytest.raises(HarnessError, match="not in .*val2017"):
        inv.require()

    val = json.loads((tree / "annotations" / "instances_val2017.json").read_text())
    val["categories"][0]["name"] = "other"
    (tree / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    assert any("different categories" in p for p in COCO.inventory(tree).problems)

    doc = json.loads((tree / "annotations" / "instances_train2017.json").read_text())
    doc["annotations"][0]["category_id"] = 4  # not a category
    (tree / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    assert any("category id not among" in p for p in COCO.inventory(tree).problems)
    (tree / "annotations" / "instances_train2017.json").unlink()
    assert "instances_train2017.json does not exist" in COCO.inventory(tree).problems[0]
