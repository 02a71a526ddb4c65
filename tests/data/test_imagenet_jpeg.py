"""The `imagenet_jpeg` fixture: ImageNet's on-disk layout, real wnids, photo-sized JPEGs."""

import io
import json
import re
import statistics

import pytest
from PIL import Image

from harness.cli import main
from harness.data import ImageFolderDataset
from harness.data import fixtures as fx
from harness.data.fixtures.photos import MAX_SIDE, MIN_SIDE, PHOTO_SIZES, jpeg_wnids
from harness.data.readers import ImageNet, imagenet_wnids
from harness.errors import HarnessError

CFG = fx.Config()


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _quantization(quality: int) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buf, "JPEG", quality=quality)
    return Image.open(buf).quantization


def test_layout_names_sizes_and_quality(imagenet_jpeg):
    wnids = jpeg_wnids(CFG.n_classes)
    assert len(wnids) == CFG.n_classes and wnids == sorted(wnids)
    assert set(wnids) <= set(imagenet_wnids()) and wnids[0] == imagenet_wnids()[0]
    assert sorted(p.name for p in imagenet_jpeg.iterdir()) == [fx.MANIFEST, "train", "val"]
    manifest = json.loads((imagenet_jpeg / fx.MANIFEST).read_text())
    assert manifest["tree"] == "imagenet_jpeg" and manifest["jpeg_quality"] == 90
    q90, sizes, val_ids = _quantization(90), [], []
    for split, per_class in (("train", CFG.jpeg_train_per_class), ("val", CFG.jpeg_val_per_class)):
        assert sorted(p.name for p in (imagenet_jpeg / split).iterdir()) == wnids
        for wnid in wnids:
            files = sorted((imagenet_jpeg / split / wnid).iterdir())
            assert len(files) == per_class
            for f in files:
                if split == "train":
                    assert re.fullmatch(rf"{wnid}_[1-9]\d*\.JPEG", f.name), f
                else:
                    m = re.fullmatch(r"ILSVRC2012_val_(\d{8})\.JPEG", f.name)
                    assert m, f
                    val_ids.append(int(m[1]))
                with Image.open(f) as im:
                    assert im.format == "JPEG" and im.mode == "RGB"
                    assert im.size in PHOTO_SIZES
                    assert min(im.size) >= MIN_SIDE and max(im.size) <= MAX_SIDE
                    assert im.quantization == q90  # saved at quality 90
                sizes.append(f.stat().st_size)
    # Val numbers: unique, 1…N, shuffled over the classes as in the real set.
    n_val = CFG.n_classes * CFG.jpeg_val_per_class
    assert sorted(val_ids) == list(range(1, n_val + 1)) and val_ids != sorted(val_ids)
    # Photo-like: tens of KB each, like ImageNet's JPEGs, not a flat image's few KB.
    assert 15_000 < statistics.mean(sizes) < 100_000, statistics.mean(sizes)
    assert min(sizes) > 8_000


def test_same_arguments_same_bytes_other_seed_other_bytes(imagenet_jpeg, tmp_path, capsys):
    assert main(["data", "fixtures", "--out", str(tmp_path / "a"), "--only", "imagenet_jpeg"]) == 0
    assert "imagenet_jpeg" in capsys.readouterr().out
    assert _files(tmp_path / "a" / "imagenet_jpeg") == _files(imagenet_jpeg)
    small = dict(n_classes=2, jpeg_train_per_class=1, jpeg_val_per_class=1)
    b, c = (
        fx.write_fixtures(tmp_path / n, fx.Config(seed=s, **small), only=["imagenet_jpeg"])[
            "imagenet_jpeg"
        ]
        for n, s in (("b", 0), ("c", 1))
    )
    fb, fc = _files(b), _files(c)
    images = [k for k in fb if k.endswith(".JPEG")]
    assert len(images) == 4 and all(fb[k] != fc.get(k) for k in images)
    # Image i of a class is the same whatever the counts: the seed-0 image is in the full tree.
    assert fb["val/n01440764/ILSVRC2012_val_00000001.JPEG"] in _files(imagenet_jpeg).values()


def test_loads_as_imagefolder_and_imagenet(imagenet_jpeg, capsys):
    wnids = jpeg_wnids(CFG.n_classes)
    ds = ImageFolderDataset(imagenet_jpeg, "train")
    assert ds.classes == wnids and len(ds) == CFG.n_classes * CFG.jpeg_train_per_class
    img, y = ds[len(ds) - 1]
    assert img.size in PHOTO_SIZES and y == CFG.n_classes - 1
    for split in ("train", "val"):
        r = ImageNet(imagenet_jpeg, split)
        assert r.classes == wnids
        assert [y for _, y in r.samples] == [
            y for y, _ in enumerate(wnids) for _ in range(getattr(CFG, f"jpeg_{split}_per_class"))
        ]
    assert main(["data", "check", "imagenet", "--root", str(imagenet_jpeg)]) == 0
    out, err = capsys.readouterr()
    assert "problem" not in out and not err


def test_jpeg_settings_leave_other_trees_current(tmp_path):
    small = fx.Config(n_classes=2, per_class=1)
    a = fx.write_fixtures(tmp_path, small, only=["imagenet_v2"])["imagenet_v2"]
    before = (a / fx.MANIFEST).stat().st_mtime_ns
    manifest = json.loads((a / fx.MANIFEST).read_text())
    assert not any(k.startswith("jpeg_") for k in manifest)
    other = fx.Config(n_classes=2, per_class=1, jpeg_train_per_class=7, jpeg_quality=75)
    fx.write_fixtures(tmp_path, other, only=["imagenet_v2"])  # kept, not an error
    assert (a / fx.MANIFEST).stat().st_mtime_ns == before
    with pytest.raises(HarnessError, match="imagenet_jpeg parameters"):
        fx.write_fixtures(tmp_path / "bad", fx.Config(jpeg_val_per_class=0), only=["imagenet_jpeg"])
    assert not (tmp_path / "bad").exists()
