"""What reaches the encoder in the ImageNet-C, ImageNet-P and 3DIEBench columns, checked
against small re-implementations of the public code's input rules:

* hendrycks/robustness@8190fe3 ``ImageNet-C/test.py``: CenterCrop(224) → ToTensor →
  Normalize(ImageNet mean/std) of the stored JPEG, no resize;
* hendrycks/robustness@8190fe3 ``ImageNet-P/test.py`` + ``utils/video_loader.py``: every
  OpenCV frame (BGR→RGB) → ToTensor → Normalize, no resize;
* facebookresearch/SIE@54541cf ``eval_classification.py`` (``Dataset3DIEBench``, the
  ``normalize`` it defines): ToTensor → Normalize((0.5016, 0.5037, 0.5060),
  (0.1030, 0.0999, 0.0969)) of the stored 256² image, no crop or resize; one view per object,
  ``rng.choice(50, 2, replace=False)[0]``, uniform over the object's views.
"""

from __future__ import annotations

import types
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config.evaluations import EVALUATIONS
from harness.data.fixtures.perturbations import write_mp4
from harness.data.readers import CORRUPTIONS, PERTURBATIONS, decode
from harness.errors import HarnessError
from harness.eval import iebench, imagenet_c, imagenet_p
from harness.eval.transforms import eval_transform

IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))
IEBENCH = (np.array([0.5016, 0.5037, 0.5060]), np.array([0.1030, 0.0999, 0.0969]))


def _image(size: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _reference(rgb: np.ndarray, crop: int | None, stats) -> torch.Tensor:
    """The public rule on an H×W×3 uint8 array: centre crop (torchvision's offsets,
    round((H − crop)/2)), then ToTensor (/255, CHW) and Normalize."""
    if crop is not None:
        top, left = round((rgb.shape[0] - crop) / 2), round((rgb.shape[1] - crop) / 2)
        rgb = rgb[top : top + crop, left : left + crop]
    mean, std = stats
    x = (rgb.astype(np.float64) / 255 - mean) / std
    return torch.from_numpy(x.transpose(2, 0, 1)).float()


def _cfg(img_size=224, resize=256, preprocess="official", patch=16, **iebench_opts) -> dict:
    return {
        "model": {"img_size": img_size, "patch_size": patch},
        "linear": {"resize": resize, "n_last": 1, "batch_size": 64},
        "robustness": {"preprocess": preprocess},
        "iebench": {**EVALUATIONS["iebench"], **iebench_opts},
        "seed": 0,
        "runtime": {"num_workers": 0},
    }


class _Recorder(torch.nn.Module):
    """A stand-in encoder: keeps every input batch; features are per-channel means."""

    def __init__(self, patch: int = 4):
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.cfg = types.SimpleNamespace(patch_size=patch)

    def features(self, x, n_last=1):
        self.inputs.append(x.detach().clone())
        return x.mean((2, 3))


def _head(feats):
    return torch.cat([feats, -feats, feats[:, :1] * 0], dim=1)  # 7 "classes"


# ---- ImageNet-C ------------------------------------------------------------------------------


def test_imagenet_c_official_feeds_a_stored_224_image_unresized():
    img = _image(224)
    ref = _reference(np.asarray(img), 224, IMAGENET)
    got = imagenet_c.imagenet_c_transform(_cfg())(img)
    assert got.shape == (3, 224, 224)
    assert torch.allclose(got, ref, atol=1e-5)
    # "resize": the linear probe's val transform, Resize(256) + CenterCrop(224): not the image.
    old = imagenet_c.imagenet_c_transform(_cfg(preprocess="resize"))(img)
    assert torch.equal(old, eval_transform(224, 256)(img))
    assert (old - ref).abs().mean() > 0.3


def test_imagenet_c_official_crops_larger_stored_images_and_refuses_smaller_ones():
    img = _image(20, seed=1)  # the micro fixture: stored 20 px, model 16 px
    got = imagenet_c.imagenet_c_transform(_cfg(img_size=16, resize=20))(img)
    assert torch.allclose(got, _reference(np.asarray(img), 16, IMAGENET), atol=1e-5)
    with pytest.raises(HarnessError, match="12×12 px, smaller than the model's 16×16") as e:
        imagenet_c.imagenet_c_transform(_cfg(img_size=16))(_image(12))
    assert "\n" not in str(e.value) and "robustness.preprocess=resize" in str(e.value)
    # "resize" upsamples a small image instead of refusing it.
    assert imagenet_c.imagenet_c_transform(_cfg(16, 20, "resize"))(_image(12)).shape == (3, 16, 16)


def _c_tree(root, size: int):
    for i, c in enumerate(CORRUPTIONS):
        for s in range(1, 6):
            d = root / c / str(s) / "n01440764"
            d.mkdir(parents=True)
            _image(size, seed=5 * i + s).save(d / "0.JPEG", quality=85)
    return root


def test_imagenet_c_evaluator_hands_the_encoder_the_stored_crop(tmp_path, monkeypatch):
    root = _c_tree(tmp_path / "c", 20)
    enc = _Recorder()
    monkeypatch.setattr(
        imagenet_c, "head_and_backbone", lambda *a, **k: (_head, enc, "cpu", ["n01440764"])
    )
    cfg = _cfg(img_size=16, resize=20)
    m = imagenet_c.imagenet_c(tmp_path, tmp_path, cfg, root, quiet=True)
    assert "mCE" in m or any("top1" in k for k in m)
    assert len(enc.inputs) == 75
    path = root / "gaussian_noise" / "1" / "n01440764" / "0.JPEG"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    # sets run in sorted (corruption, severity) order
    first = sorted((c, s) for c in CORRUPTIONS for s in range(1, 6)).index(("gaussian_noise", 1))
    assert torch.allclose(enc.inputs[first][0], _reference(rgb, 16, IMAGENET), atol=1e-5)
    small = _c_tree(tmp_path / "small", 12)
    with pytest.raises(HarnessError, match=r"ImageNet-C image .*0\.JPEG is stored at 12×12"):
        imagenet_c.imagenet_c(tmp_path, tmp_path, cfg, small, quiet=True)


# ---- ImageNet-P ------------------------------------------------------------------------------


def test_imagenet_p_official_feeds_decoded_frames_unresized(tmp_path):
    frames = [np.asarray(_image(32, seed=t)) for t in range(3)]
    path = tmp_path / "v.mp4"
    write_mp4(path, frames)
    tf = imagenet_p.imagenet_p_transform(_cfg(img_size=32, resize=36))
    got = torch.stack([tf(Image.fromarray(f)) for f in decode(path)])
    ref = torch.stack([_reference(f, None, IMAGENET) for f in decode(path)])
    assert got.shape == (3, 3, 32, 32) and torch.allclose(got, ref, atol=1e-5)
    old = imagenet_p.imagenet_p_transform(_cfg(img_size=32, resize=36, preprocess="resize"))
    assert (torch.stack([old(Image.fromarray(f)) for f in decode(path)]) - ref).abs().mean() > 0.1
    assert imagenet_p.first_frame_size(path) == (32, 32)


def test_imagenet_p_evaluator_hands_the_encoder_the_frames(tmp_path, monkeypatch):
    root = tmp_path / "p"
    for i, p in enumerate(PERTURBATIONS):
        write_mp4(
            root / p / "n01440764" / "0.mp4", [np.asarray(_image(20, 2 * i + t)) for t in (0, 1)]
        )
    enc = _Recorder()
    monkeypatch.setattr(
        imagenet_p, "head_and_backbone", lambda *a, **k: (_head, enc, "cpu", ["n01440764"])
    )
    cfg = _cfg(img_size=16, resize=20)
    imagenet_p.imagenet_p(tmp_path, tmp_path, cfg, root, quiet=True)
    assert len(enc.inputs) == len(PERTURBATIONS)
    frames = decode(root / PERTURBATIONS[0] / "n01440764" / "0.mp4")
    ref = torch.stack([_reference(f, 16, IMAGENET) for f in frames])
    assert enc.inputs[0].shape == (2, 3, 16, 16) and torch.allclose(enc.inputs[0], ref, atol=1e-5)
    with pytest.raises(HarnessError, match="ImageNet-P video .*0.mp4 is stored at 20×20"):
        imagenet_p.imagenet_p(tmp_path, tmp_path, _cfg(img_size=24, resize=28), root, quiet=True)


# ---- 3DIEBench -------------------------------------------------------------------------------


def test_iebench_sie_input_is_the_stored_256_image_with_3diebench_statistics():
    img = _image(256, seed=3)
    got = iebench.iebench_transform(_cfg(), patch=16)(img)
    assert got.shape == (3, 256, 256)
    assert torch.allclose(got, _reference(np.asarray(img), None, IEBENCH), atol=1e-4)
    old = iebench.iebench_transform(_cfg(input="imagenet"), patch=16)(img)
    assert old.shape == (3, 224, 224) and torch.equal(old, eval_transform(224, 256)(img))
    # A fixture stored off the patch grid (tiny: 36 px, patch 8) loses only the remainder.
    small = _image(36, seed=4)
    trimmed = iebench.iebench_transform(_cfg(), patch=8)(small)
    assert torch.allclose(trimmed, _reference(np.asarray(small), 32, IEBENCH), atol=1e-4)


def test_the_vit_reads_a_3diebench_image_larger_than_its_img_size():
    from harness.model.backbone import Backbone, BackboneConfig

    b = Backbone(BackboneConfig(img_size=16, patch_size=4, width=32, depth=2, heads=2)).eval()
    for size in (16, 20, 32):  # model size, the micro fixture's, twice the model's
        out = b(torch.randn(2, 3, size, size))
        assert out.grid == (size // 4, size // 4) and out.cls.shape == (2, 32)


def _views(n_objects: int, n_views: int, seed: int = 0) -> list[tuple[str, int]]:
    views = [(f"s/{o:03d}", k) for o in range(n_objects) for k in range(n_views)]
    order = torch.randperm(len(views), generator=torch.Generator().manual_seed(seed))
    return [views[i] for i in order]  # readers list views in their own order


def test_one_view_per_object_is_seeded_one_per_object_and_uniform():
    views = _views(40, 5)
    pick = iebench.one_view_per_object(views, seed=7)
    assert sorted(views[i][0] for i in pick) == sorted({o for o, _ in views})  # each object once
    assert pick == iebench.one_view_per_object(views, seed=7)
    assert pick != iebench.one_view_per_object(views, seed=8)
    # SIE's draw, rng.choice(50, 2, replace=False)[0], is uniform over the views.
    ks = Counter(views[i][1] for s in range(100) for i in iebench.one_view_per_object(views, s))
    assert set(ks) == set(range(5)) and max(ks.values()) / min(ks.values()) < 1.25
    # "all": every view of every object, objects × views.
    rows = iebench.object_rows(views)
    assert len(rows) == 40 and sorted(i for r in rows for i in r) == list(range(200))
    assert all([views[i][1] for i in r] == list(range(5)) for r in rows)


def _iebench_tree(root, n_classes=2, objects=3, views=4, size=20):
    rng = np.random.default_rng(0)
    split = {"train": ([], []), "val": ([], [])}
    for y in range(n_classes):
        for j in range(objects):
            d = root / f"0{y}" / f"obj{j}"
            d.mkdir(parents=True)
            for k in range(views):
                _image(size, seed=100 * y + 10 * j + k).save(d / f"image_{k}.jpg")
                np.save(d / f"latent_{k}.npy", rng.uniform(-1, 1, 7))
            s = "val" if j == objects - 1 else "train"
            split[s][0].append(f"/0{y}/obj{j}/")
            split[s][1].append(y)
    for s, (names, labels) in split.items():
        np.save(root / f"{s}_images.npy", np.array(names))
        np.save(root / f"{s}_labels.npy", np.array(labels, dtype=np.int64))
    return root


@pytest.mark.parametrize("val_views", ["one", "all"])
def test_iebench_evaluator_encodes_the_stored_images_and_the_chosen_val_views(
    tmp_path, monkeypatch, val_views
):
    root = _iebench_tree(tmp_path / "3d")
    enc = _Recorder(patch=4)
    monkeypatch.setattr(iebench, "eval_backbone", lambda run_dir: (enc, "cpu"))
    cfg = _cfg(img_size=16, resize=20, patch=4, epochs=2, val_views=val_views)
    m = iebench.iebench_linear(tmp_path, tmp_path, cfg, root, quiet=True)
    assert m["n_objects"] == 2
    train, val = enc.inputs
    assert train.shape == (2 * 2 * 4, 3, 20, 20)  # every train view, stored 20 px, uncropped
    assert val.shape == ((2 if val_views == "one" else 2 * 4), 3, 20, 20)
    rgb = np.asarray(Image.open(root / "00" / "obj0" / "image_0.jpg").convert("RGB"))
    assert torch.allclose(train[0], _reference(rgb, None, IEBENCH), atol=1e-4)


def test_the_departure_measures_are_one_line():
    s = iebench.one_view_spread(objects=500, views=10, draws=20)
    assert "\n" not in s and "pp" in s
    assert "a = 2.22/2.24/2.32" in iebench.input_effect()
    assert "central 196×196 px (76.6 %" in imagenet_c.resize_effect()
