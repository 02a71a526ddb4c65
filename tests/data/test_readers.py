"""Evaluation-set readers on fixtures in the real layouts, and `harness data check` on broken copies."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from harness.cli import main
from harness.data import fixtures as fx
from harness.data.readers import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    PERTURBATIONS,
    READERS,
    SEVERITIES,
    IEBench3D,
    ImageNet,
    ImageNetC,
    ImageNetP,
    ImageNetR,
    ImageNetSketch,
    ImageNetV2,
    decode,
    imagenet_r_wnids,
    imagenet_wnids,
)
from harness.data.synthetic import class_names
from harness.errors import HarnessError

CFG = fx.Config(
    seed=3,
    n_classes=6,
    size=32,
    train_per_class=4,
    val_per_class=2,
    per_class=2,
    frames=5,
    objects_per_class=3,
    views=12,
)
CLASSES = class_names(CFG.n_classes)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return fx.write_fixtures(tmp_path_factory.mktemp("fixtures"), CFG)


def _broken_copy(tree: Path, tmp_path: Path, *remove: str) -> Path:
    copy = tmp_path / tree.name
    shutil.copytree(tree, copy)
    for r in remove:
        (copy / r).unlink() if (copy / r).is_file() else shutil.rmtree(copy / r)
    return copy


def _check(capsys, name, root):
    rc = main(["data", "check", name, "--root", str(root)])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _tiny_png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


# ---------------------------------------------------------------- fixtures


def test_fixtures_deterministic_and_atomic(tmp_path, trees):
    def files(root):
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    again = fx.write_fixtures(tmp_path / "a", CFG, only=["imagenet_c", "imagenet_p", "3diebench"])
    for name, root in again.items():
        assert files(root) == files(trees[name]), name
    other = fx.write_fixtures(
        tmp_path / "b", fx.Config(**{**CFG.__dict__, "seed": 4}), only=["imagenet_v2"]
    )
    assert files(other["imagenet_v2"]).keys() == files(trees["imagenet_v2"]).keys()
    assert files(other["imagenet_v2"]) != files(trees["imagenet_v2"])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "3diebench",
        "imagenet_c",
        "imagenet_p",
    ]
    before = (trees["imagenet_c"] / fx.MANIFEST).stat().st_mtime_ns
    fx.write_fixtures(trees["imagenet_c"].parent, CFG, only=["imagenet_c"])  # same parameters: kept
    assert (trees["imagenet_c"] / fx.MANIFEST).stat().st_mtime_ns == before
    with pytest.raises(HarnessError, match="--force"):
        fx.write_fixtures(tmp_path / "a", fx.Config(seed=9), only=["imagenet_c"])


def test_interrupted_fixture_leaves_no_tree(tmp_path, monkeypatch):
    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(fx, "corrupt", boom)
    with pytest.raises(KeyboardInterrupt):
        fx.write_fixtures(tmp_path, CFG, only=["imagenet_c"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_every_fixture_passes_data_check(trees, capsys):
    for name in READERS:
        rc, out, err = _check(capsys, name, trees[name])
        assert rc == 0 and "problem" not in out and not err, (name, out, err)


# ---------------------------------------------------------------- ImageNet-1k, V2, Sketch


def test_imagenet_matches_imagefolder(trees):
    for split in ("train", "val"):
        ds, ref = ImageNet(trees["imagenet"], split), ImageFolder(str(trees["imagenet"] / split))
        assert ds.classes == ref.classes == CLASSES
        assert [(Path(p), y) for p, y in ds.samples] == [(Path(p), y) for p, y in ref.samples]


def test_v2_label_is_the_folder_number(tmp_path):
    for k in (0, 1, 2, 10, 100, 999):
        _tiny_png(tmp_path / "v2" / str(k) / "0.jpeg", value=k % 256)
    ds = ImageNetV2(tmp_path / "v2")
    by_folder = {Path(p).parent.name: y for p, y in ds.samples}
    assert by_folder == {"0": 0, "1": 1, "2": 2, "10": 10, "100": 100, "999": 999}
    assert ds.classes == list(imagenet_wnids()) and ds.classes[10] == "n01530575"
    # The pitfall the reader exists for: ImageFolder sorts "0", "1", "10", "100", "2", … as strings.
    assert ImageFolder(str(tmp_path / "v2")).class_to_idx == {
        "0": 0,
        "1": 1,
        "10": 2,
        "100": 3,
        "2": 4,
        "999": 5,
    }


def test_v2_fixture_uses_the_heads_indices(trees):
    ds = ImageNetV2(trees["imagenet_v2"], classes=CLASSES)
    assert sorted(set(ds.targets)) == list(range(CFG.n_classes))
    assert all(int(Path(p).parent.name) == y for p, y in ds.samples)
    with pytest.raises(HarnessError, match="class index 3 but the head has 3 classes"):
        ImageNetV2(trees["imagenet_v2"], classes=CLASSES[:3])


def test_v2_refuses_wnid_folders(trees):
    with pytest.raises(HarnessError, match="not an integer class index"):
        ImageNetV2(trees["imagenet_sketch"])


def test_sketch_is_greyscale_loaded_as_rgb(trees):
    ds = ImageNetSketch(trees["imagenet_sketch"], classes=CLASSES)
    assert ds.classes == CLASSES and len(ds) == CFG.n_classes * CFG.per_class
    assert Image.open(ds.samples[0][0]).mode == "L"
    x = np.asarray(ds[0][0])
    assert x.shape == (32, 32, 3) and np.array_equal(x[..., 0], x[..., 2])
    assert all(Path(p).parent.name == CLASSES[y] for p, y in ds.samples)


def test_folder_not_in_the_heads_classes_is_refused(trees):
    with pytest.raises(HarnessError, match="not among the head's 4 classes"):
        ImageNetSketch(trees["imagenet_sketch"], classes=CLASSES[:4])


# ---------------------------------------------------------------- ImageNet-R


def test_imagenet_r_masks_logits_to_its_classes(tmp_path):
    for w in imagenet_r_wnids():
        _tiny_png(tmp_path / "r" / w / "art_0.jpg")
    ds = ImageNetR(tmp_path / "r")
    r_index = [imagenet_wnids().index(w) for w in imagenet_r_wnids()]
    assert (
        len(ds.classes) == 1000 and ds.indices.tolist() == r_index and r_index[:4] == [1, 2, 4, 6]
    )
    assert sorted(set(ds.targets)) == r_index  # labels are 1000-way indices
    logits = torch.randn(3, 1000)
    logits[:, 0] = 100.0  # n01440764 (tench) is not an ImageNet-R class
    logits[:, 3] = 90.0  # nor is index 3
    pred = ds.mask_logits(logits).argmax(1)
    assert logits.argmax(1).tolist() == [0, 0, 0]
    assert all(p in r_index for p in pred.tolist())
    assert pred.tolist() == [r_index[i] for i in ds.restrict(logits).argmax(1).tolist()]
    assert ds.restrict(logits).shape == (3, 200)
    assert set(ds.mask_logits(logits).topk(5).indices.flatten().tolist()) <= set(r_index)


def test_imagenet_r_refuses_a_partial_wnid_tree(tmp_path):
    for w in imagenet_r_wnids()[:-1]:
        _tiny_png(tmp_path / "r" / w / "art_0.jpg")
    with pytest.raises(
        HarnessError, match=f"exactly the 200 ImageNet-R classes.*{imagenet_r_wnids()[-1]}"
    ):
        ImageNetR(tmp_path / "r")


def test_imagenet_r_fixture_keeps_head_indices(trees):
    ds = ImageNetR(trees["imagenet_r"], classes=CLASSES)
    assert ds.indices.tolist() == [1, 3, 5] and ds.present == fx.r_classes(CFG.n_classes)
    assert sorted(set(ds.targets)) == [1, 3, 5]
    assert all(Path(p).parent.name == CLASSES[y] for p, y in ds.samples)
    assert ds.mask_logits(torch.eye(CFG.n_classes)[0:1] * 9).argmax(1).item() in (1, 3, 5)


# ---------------------------------------------------------------- ImageNet-C


def test_imagenet_c_finds_every_corruption_and_severity(trees):
    assert (
        len(ALL_CORRUPTIONS) == 19
        and ALL_CORRUPTIONS[:15] == CORRUPTIONS
        and SEVERITIES == (1, 2, 3, 4, 5)
    )
    suite = ImageNetC.suite(trees["imagenet_c"], ALL_CORRUPTIONS, classes=CLASSES)
    assert set(suite) == {(c, s) for c in ALL_CORRUPTIONS for s in SEVERITIES}
    for (c, s), ds in suite.items():
        assert (ds.corruption, ds.severity) == (c, s)
        assert sorted(ds.targets) == sorted(list(range(CFG.n_classes)) * CFG.c_per_class)
        assert all(Path(p).parent.parent == trees["imagenet_c"] / c / str(s) for p, _ in ds.samples)
    img = np.asarray(suite["fog", 5][0][0], dtype=np.float32)
    clean = np.asarray(suite["fog", 1][0][0], dtype=np.float32)
    assert img.shape == (32, 32, 3) and np.abs(img - clean).mean() > 3  # severities really differ


@pytest.mark.slow
def test_missing_severity_stops_check_and_reader(trees, tmp_path, capsys):
    broken = _broken_copy(trees["imagenet_c"], tmp_path, "fog/3")
    rc, out, err = _check(capsys, "imagenet_c", broken)
    assert rc == 2
    line = _one_line(err)
    assert (
        "missing severity 3 of 'fog'" in line
        and str(broken) in line
        and "harness data fixtures" in line
    )
    assert "fog: severities 1 2 4 5 (missing 3)" in out and "snow: severities 1 2 3 4 5" in out
    with pytest.raises(HarnessError, match="missing severity 3 of 'fog'"):
        ImageNetC.suite(broken)
    with pytest.raises(HarnessError, match="missing severity 3 of 'fog'"):
        ImageNetC(broken, "fog", 3)
    assert len(ImageNetC(broken, "fog", 2)) == CFG.n_classes * CFG.c_per_class


def test_missing_extra_corruption_only_matters_when_asked_for(trees, tmp_path):
    broken = _broken_copy(trees["imagenet_c"], tmp_path, "saturate/5")
    assert len(ImageNetC.suite(broken)) == 75  # the 15 benchmark corruptions
    with pytest.raises(HarnessError, match="severity 5 of 'saturate'"):
        ImageNetC.suite(broken, ALL_CORRUPTIONS)


@pytest.mark.slow
def test_data_check_exit_code_from_the_shell(trees, tmp_path):
    broken = _broken_copy(trees["imagenet_c"], tmp_path, "fog/3")
    p = subprocess.run(
        [sys.executable, "-m", "harness.cli", "data", "check", "imagenet_c", "--root", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "missing severity 3 of 'fog'" in _one_line(p.stderr)


# ---------------------------------------------------------------- ImageNet-P


def test_imagenet_p_finds_every_perturbation_and_decodes_all_frames(trees):
    assert len(PERTURBATIONS) == 14
    suite = ImageNetP.suite(trees["imagenet_p"], classes=CLASSES)
    assert list(suite) == list(PERTURBATIONS)
    for p, ds in suite.items():
        assert sorted(ds.targets) == list(range(CFG.n_classes))
        frames, label = ds[0]
        assert len(frames) == fx.frames_for(p, CFG.frames) and frames[0].size == (32, 32)
        assert Path(ds.samples[0][0]).parent.name == CLASSES[label]
    assert fx.frames_for("translate", CFG.frames) == 7 > fx.frames_for("rotate", CFG.frames) == 5
    rotate = [np.asarray(f, dtype=np.float32) for f in suite["rotate"][0][0]]
    assert np.abs(rotate[0] - rotate[-1]).mean() > 3  # the sequence moves


def test_imagenet_p_frames_are_rgb_and_transformable(trees, tmp_path):
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    fx.write_mp4(tmp_path / "red.mp4", [red] * 3)
    got = decode(tmp_path / "red.mp4")
    assert len(got) == 3 and got[0][..., 0].mean() > 180 and got[0][..., 2].mean() < 40
    ds = ImageNetP(
        trees["imagenet_p"],
        "translate",
        classes=CLASSES,
        transform=lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1),
    )
    x, _ = ds[0]
    assert x.shape == (7, 3, 32, 32)


def test_missing_perturbation_stops_check_and_reader(trees, tmp_path, capsys):
    broken = _broken_copy(trees["imagenet_p"], tmp_path, "tilt")
    rc, out, err = _check(capsys, "imagenet_p", broken)
    assert rc == 2 and "missing perturbation 'tilt'" in _one_line(err) and "tilt: MISSING" in out
    with pytest.raises(HarnessError, match="missing perturbation 'tilt'"):
        ImageNetP.suite(broken)
    with pytest.raises(HarnessError, match="missing perturbation 'tilt'"):
        ImageNetP(broken, "tilt")


def test_a_broken_video_past_the_first_fails_imagenet_p_check(trees, tmp_path, capsys):
    """Every video is decoded, not just the first of each perturbation."""
    broken = _broken_copy(trees["imagenet_p"], tmp_path)
    videos = sorted((broken / "tilt").rglob("*.mp4"))
    victim = videos[-1]
    victim.write_bytes(victim.read_bytes()[:40])
    rc, out, err = _check(capsys, "imagenet_p", broken)
    assert rc == 2 and str(victim) in _one_line(err) and "no frame could be decoded" in err
    n = len(list(broken.rglob("*.mp4")))
    assert f"videos decoded: {n} (0 known from the cache), 1 bad" in out


# ---------------------------------------------------------------- 3DIEBench


def test_3diebench_latents_and_splits(trees):
    root = trees["3diebench"]
    train, val = IEBench3D(root, "train", with_latent=True), IEBench3D(root, "val")
    names = {
        s: [str(x).strip("/") for x in np.load(root / f"{s}_images.npy")] for s in ("train", "val")
    }
    labels = {s: np.load(root / f"{s}_labels.npy").tolist() for s in ("train", "val")}
    for s, ds in (("train", train), ("val", val)):
        assert ds.classes == CLASSES  # sorted synsets
        assert sorted({o for o, _ in ds.views}) == sorted(names[s])
        assert len(ds) == len(names[s]) * CFG.views
        obj_label = dict(zip(names[s], labels[s]))
        assert all(
            obj_label[o] == y and o.split("/")[0] == ds.classes[y]
            for (o, _), y in zip(ds.views, ds.targets)
        )
    assert not {o for o, _ in train.views} & {o for o, _ in val.views}
    first = train.views[0][0]
    assert [k for o, k in train.views if o == first] == list(
        range(CFG.views)
    )  # image_10 after image_9
    for i, ((obj, k), (path, _)) in enumerate(zip(train.views, train.samples)):
        assert Path(path).name == f"image_{k}.jpg"
        np.testing.assert_array_equal(
            train.latent(i), fx.iebench_latent(CFG.seed, obj.split("/")[1], k)
        )
    img, y, lat = train[13]
    assert img.size == (32, 32) and y == train.targets[13]
    assert torch.equal(
        lat,
        torch.from_numpy(
            fx.iebench_latent(CFG.seed, train.views[13][0].split("/")[1], train.views[13][1])
        ),
    )


def test_3diebench_refuses_a_view_without_its_latent(trees, tmp_path):
    obj = str(np.load(trees["3diebench"] / "val_images.npy")[0]).strip("/")
    broken = _broken_copy(trees["3diebench"], tmp_path, f"{obj}/latent_7.npy")
    with pytest.raises(HarnessError, match=f"image without its latent.*{obj}/7"):
        IEBench3D(broken, "val")
    assert len(IEBench3D(broken, "train")) == len(IEBench3D(trees["3diebench"], "train"))
