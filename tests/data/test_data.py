import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data.imagefolder import ImageFolderDataset, check_imagefolder
from harness.data.synthetic import MANIFEST, generate
from harness.errors import HarnessError

SMALL = dict(n_classes=10, train_per_class=3, val_per_class=2, size=32)


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def learn_root(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("learn"),
        seed=1,
        n_classes=10,
        train_per_class=40,
        val_per_class=15,
        size=32,
    )


def test_deterministic_per_seed(tmp_path):
    a, b, c = (generate(tmp_path / n, seed=s, **SMALL) for n, s in (("a", 0), ("b", 0), ("c", 1)))
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb
    assert fa.keys() == fc.keys()
    assert all(fa[k] != fc[k] for k in fa)


def test_layout_counts_and_manifest(tmp_path):
    root = generate(tmp_path, seed=0, **SMALL)
    assert sorted(p.name for p in root.iterdir()) == [MANIFEST, "train", "val"]  # no temp dirs left
    manifest = json.loads((root / MANIFEST).read_text())
    classes = manifest["classes"]
    assert len(classes) == 10 and classes == sorted(classes)
    assert [int(c[1:3]) for c in classes] == list(range(10))
    # shape x texture: 5 shapes, 2 textures for 10 classes, every (shape, texture) pair distinct
    pairs = [tuple(c.split("_")[1:]) for c in classes]
    assert (
        len(set(pairs)) == 10
        and len({s for s, _ in pairs}) == 5
        and len({t for _, t in pairs}) == 2
    )
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == classes
        for c in classes:
            files = sorted((root / split / c).iterdir())
            assert len(files) == n
            im = Image.open(files[0])
            assert im.mode == "RGB" and im.size == (32, 32)


def test_manifest_fast_path_and_mismatch(tmp_path):
    root = generate(tmp_path, seed=0, **SMALL)
    probe = root / "train" / "c00_ell_solid" / "0.png"
    before = (probe.stat().st_mtime_ns, (root / MANIFEST).stat().st_mtime_ns)
    generate(tmp_path, seed=0, **SMALL)
    assert (probe.stat().st_mtime_ns, (root / MANIFEST).stat().st_mtime_ns) == before
    with pytest.raises(HarnessError) as e:
        generate(tmp_path, seed=1, **SMALL)
    assert (
        "\n" not in str(e.value) and "--force" in str(e.value) and "another --root" in str(e.value)
    )
    generate(tmp_path, seed=1, force=True, **SMALL)
    assert json.loads((root / MANIFEST).read_text())["seed"] == 1


def test_foreign_tree_not_overwritten(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(HarnessError, match="--force"):
        generate(tmp_path, **SMALL)
    assert (tmp_path / "train" / "cat").is_dir()


def test_imagefolder_dataset_matches_folders(tmp_path):
    root = generate(tmp_path, seed=0, **SMALL)
    ds = ImageFolderDataset(root, "val")
    assert ds.classes == sorted(p.name for p in (root / "val").iterdir())
    assert len(ds) == len(ds.samples) == len(ds.targets) == 20
    assert ds.info == check_imagefolder(root, "val")
    assert ds.info["n_images"] == 20 and set(ds.info["counts"].values()) == {2}
    for path, label in ds.samples:
        assert Path(path).parent.name == ds.classes[label]
    img, label = ds[5]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and label == ds.targets[5]
    assert ImageFolderDataset(root, "val", transform=np.asarray)[0][0].shape == (32, 32, 3)


def _bad_missing_root(root):
    return root / "nope", "train", "harness data synth"


def _bad_missing_split(root):
    shutil.rmtree(root / "val")
    return root, "val", "add val/ under"


def _bad_loose_images(root):
    split = root / "train"
    for d in list(split.iterdir()):
        for f in d.iterdir():
            f.rename(split / f"{d.name}_{f.name}")
        d.rmdir()
    return root, "train", "one sub-folder per class"


def _bad_one_class(root):
    for d in sorted((root / "train").iterdir())[1:]:
        shutil.rmtree(d)
    return root, "train", "at least 2 classes"


def _bad_empty_class(root):
    (root / "train" / "zz_empty").mkdir()
    (root / "train" / "zz_empty" / "notes.txt").write_text("not an image")
    return root, "train", "zz_empty"


@pytest.mark.parametrize(
    "breaker",
    [_bad_missing_root, _bad_missing_split, _bad_loose_images, _bad_one_class, _bad_empty_class],
)
def test_bad_roots_give_one_line_fix(tmp_path, breaker):
    root = generate(
        tmp_path / "d", seed=0, n_classes=3, train_per_class=1, val_per_class=1, size=16
    )
    root, split, must_say = breaker(root)
    for call in (check_imagefolder, ImageFolderDataset):
        with pytest.raises(HarnessError) as e:
            call(root, split)
        msg = str(e.value)
        assert "\n" not in msg and ": " in msg and must_say in msg, msg


def test_pose_varies_within_class(learn_root):
    cls = json.loads((learn_root / MANIFEST).read_text())["classes"][3]
    imgs = [np.asarray(Image.open(learn_root / "train" / cls / f"{i}.png")) for i in range(5)]
    assert all(not np.array_equal(imgs[0], im) for im in imgs[1:])


def _features(img: Image.Image) -> np.ndarray:
    """Pose- and colour-invariant cues: radial mass profile (shape), colour spread and edges (texture)."""
    x = np.asarray(img, dtype=np.float32) / 255
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    fg = np.linalg.norm(x - np.median(border, axis=0), axis=-1) > 0.25
    ys, xs = np.nonzero(fg)
    area = len(ys) + 1e-6
    r = np.hypot(ys - ys.mean(), xs - xs.mean()) / np.sqrt(area)
    radial = np.histogram(r, bins=8, range=(0, 1.6))[0] / area
    px = x[fg]
    spread = np.linalg.norm(px - px.mean(0), axis=1).mean()
    grad = np.abs(np.diff(x, axis=0)).sum(-1)[:, :-1] + np.abs(np.diff(x, axis=1)).sum(-1)[:-1]
    edges = (grad * fg[:-1, :-1]).sum() / area
    return np.concatenate([radial, [spread, edges]])


def test_classes_are_learnable(learn_root):
    # Nearest class mean on cheap hand-made features: if this beats chance clearly, so can a ViT.
    def load(split):
        ds = ImageFolderDataset(learn_root, split)
        return np.stack([_features(img) for img, _ in ds]), np.array(ds.targets)

    xtr, ytr = load("train")
    xva, yva = load("val")
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    means = np.stack([xtr[ytr == c].mean(0) for c in range(10)])
    acc = (((xva[:, None] - means[None]) ** 2).sum(-1).argmin(1) == yva).mean()
    assert acc > 0.5, acc  # chance is 0.1


def test_bad_parameters(tmp_path):
    with pytest.raises(HarnessError, match="2 to 20"):
        generate(tmp_path, n_classes=21)
    assert not os.listdir(tmp_path)


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    import harness.data.synthetic as synth

    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(*args)

    real = synth.render
    monkeypatch.setattr(synth, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, **SMALL)
    assert os.listdir(tmp_path) == []  # no manifest, no half train/, temp dir cleaned
    monkeypatch.setattr(synth, "render", real)
    assert _files(generate(tmp_path, **SMALL)) == _files(generate(tmp_path / "ref", **SMALL))
