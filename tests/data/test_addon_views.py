"""The add-ons' data pipelines (``views.addon_data``, harness/data/addon_views.py) are those of
the public SER code, aitrics-chris/SER:

* AugSelf: branch ``augself`` at 0bcab6c7db7d10ff6be322402e85e680f5a2e6ec, ``loader/augself.py``
  (RandomResizedCrop, crop_min 0.08, bilinear) and ``builder/utils.py``
  ``load_equiv_aug_augself`` / ``ColorJitter_augself`` / ``GaussianBlur_augself`` (kornia
  0.4.1: flip, ColorJitter(0.4, 0.4, 0.4, 0.1, p 0.8) with torchvision's brightness and
  contrast, kornia's HSV saturation and ``kornia.enhance.adjust_hue`` in radians, one order
  per call; RandomGrayscale(0.2); a 23×23 reflect-padded blur σ∈[0.1, 2] p 0.5 on both views);
* STL: ``main`` at dbe5e9361953a28258a7f24d92f742a162376c77, ``loader/stl.py`` and
  ``builder/moco.py`` ``train_stl`` (Resize((224, 224)); per view one kornia
  RandomResizedCrop(scale 0.2–1, slice + bilinear resize, align_corners=True),
  ColorJiggle(0.4, 0.4, 0.2, 0.1, p 0.8) and RandomGrayscale(0.2) draw for the even images,
  reused for the odd ones; then per image a flip and a 9×9 blur p 0.5);
* EquiMod: the same commit, ``loader/equimod.py`` (torchvision on PIL, per image; 9×9 blur p
  1.0 / 0.1, solarize at 128 p 0 / 0.2; clean image Resize(256) + CenterCrop(224), bilinear;
  fixed ``p_mean`` / ``p_std``).

Each reference below is written here from those definitions in float64 on the parameters the
harness drew, and the harness's views must agree with it within a stated tolerance: the
harness crops to uint8 and renders in float32 (and, for STL, rounds its resized slice to
uint8: ≤ 0.5/255 before the jitter).
"""

import math

import pytest
import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision.transforms import functional as F

from harness import config as C
from harness.config import checks
from harness.data import addon_views as A
from harness.data.augment import IDX, MEAN, STD, Pipeline, decode
from harness.data.views import Augmentations, ViewPolicy, _chunk_order
from harness.errors import HarnessError
from methods.moco_v3 import MoCoV3

N_DRAWS = 2000


def _image(h=256, w=320, k=0) -> Image.Image:
    """A smooth, colourful, fixed image (saturated and grey regions, edges)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    r = 0.5 + 0.5 * torch.sin(9 * x + k)
    g = 0.5 + 0.5 * torch.cos(7 * y - 0.7 * k)
    b = ((x * y * 3 + 0.1 * k) % 1) * (x > 0.3)
    rgb = (torch.stack([r, g, b], -1) * 255).round().to(torch.uint8)
    return Image.fromarray(rgb.numpy())


def _within_binomial(k: float, n: int, p: float) -> bool:
    return abs(k / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12


def _ser_augs(name: str, size: int = 224) -> Augmentations:
    augs = Augmentations(MoCoV3.augmentation, size, 16)
    A.configure(augs, [name])
    return augs


def _draws(pipe, n=N_DRAWS, img=None) -> torch.Tensor:
    img = torch.empty(3, 300, 400) if img is None else img
    torch.manual_seed(0)
    return torch.stack([pipe.sample(img) for _ in range(n)])


def _area(d: torch.Tensor) -> torch.Tensor:
    return d[:, IDX["height"]] * d[:, IDX["width"]] / (d[:, IDX["img_h"]] * d[:, IDX["img_w"]])


def _unnorm(x: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v, dtype=x.dtype).view(-1, 3, 1, 1) for v in (MEAN, STD))
    return x * std + mean


# ---- references, float64, from the public definitions ------------------------------------


def _rgb_to_hsv(x):
    """kornia's rgb_to_hsv: hue in radians [0, 2π), the first maximum (r, g, b) on ties."""
    r, g, b = x.unbind(-3)
    maxc, minc = x.amax(-3), x.amin(-3)
    d = maxc - minc
    dd = torch.where(d == 0, torch.ones_like(d), d)
    h = torch.where(
        r == maxc, ((g - b) / dd) % 6, torch.where(g == maxc, (b - r) / dd + 2, (r - g) / dd + 4)
    )
    h = torch.where(d == 0, torch.zeros_like(h), h) / 6 * 2 * math.pi
    s = torch.where(maxc > 0, d / maxc.clamp_min(1e-300), torch.zeros_like(d))
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    h6 = (h / (2 * math.pi) * 6) % 6
    hi = h6.floor()
    f = h6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(*v.shape[:-2], 3, *v.shape[-2:], dtype=v.dtype)
    for k, (rr, gg, bb) in enumerate(table):
        m = (hi == k).unsqueeze(-3)
        out = torch.where(m, torch.stack([rr, gg, bb], -3), out)
    return out


def _saturation_hsv(x, f):
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(h, (s * f).clamp(0, 1), v)


def _hue_radians(x, rad):
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(torch.remainder(h + rad, 2 * math.pi), s, v)


def _gray(x, w=(0.299, 0.587, 0.114)):
    return (w[0] * x[0] + w[1] * x[1] + w[2] * x[2]).expand(3, -1, -1)


def _blur2d(x, ksize, sigma):
    """AugSelf's GaussianBlur / kornia's gaussian_blur2d: the outer product of the 1-D kernel,
    reflect padding, one 2-D convolution."""
    half = ksize // 2
    t = torch.linspace(-half, half, ksize, dtype=x.dtype)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    k2 = (k1[:, None] * k1[None, :]).expand(3, 1, ksize, ksize)
    y = nnf.pad(x[None], (half,) * 4, mode="reflect")
    return nnf.conv2d(y, k2, groups=3)[0]


def _ser_augself(img: Image.Image, p: dict, size: int, ksize: int) -> torch.Tensor:
    """SER's augself branch for one image: PIL crop → tensor, then t1/t2 on the GPU."""
    i, j, h, w = (int(p[k]) for k in ("top", "left", "height", "width"))
    x = F.to_tensor(F.resized_crop(img, i, j, h, w, [size, size], F.InterpolationMode.BILINEAR))
    x = x.double()
    if p["flip"]:
        x = x.flip(-1)
    if p["jitter"]:
        for k in range(4):
            o = int(p[f"order{k}"])
            if o == 0:  # apply_adjust_brightness: a blend with black
                x = (p["brightness"] * x).clamp(0, 1)
            elif o == 1:  # apply_adjust_contrast: a blend with the mean grey (0.2989, …)
                m = _gray(x, (0.2989, 0.587, 0.114)).mean()
                x = (p["contrast"] * x + (1 - p["contrast"]) * m).clamp(0, 1)
            elif o == 2:
                x = _saturation_hsv(x, p["saturation"])
            else:  # kornia.enhance.adjust_hue(img, factor): the factor in radians
                x = _hue_radians(x, p["hue"])
    if p["gray"]:
        x = _gray(x)
    if p["blur"]:
        x = _blur2d(x, ksize, p["sigma"])
    return x


def _ser_stl(img: Image.Image, p: dict, size: int, ksize: int) -> torch.Tensor:
    """SER's STL for one image: squash to size², aligned_transform (crop slice + bilinear
    align_corners=True, ColorJiggle, grayscale), invariant_transform (flip, blur)."""
    x = F.to_tensor(F.resize(img, [size, size], F.InterpolationMode.BILINEAR)).double()
    i, j, h, w = (int(p[k]) for k in ("top", "left", "height", "width"))
    x = nnf.interpolate(
        x[None, :, i : i + h, j : j + w], (size, size), mode="bilinear", align_corners=True
    )[0]
    if p["jitter"]:
        for k in range(4):
            o = int(p[f"order{k}"])
            if o == 0:  # kornia adjust_brightness(x, factor − 1): additive
                x = (x + p["brightness"] - 1).clamp(0, 1)
            elif o == 1:  # kornia adjust_contrast: multiplicative
                x = (x * p["contrast"]).clamp(0, 1)
            elif o == 2:
                x = _saturation_hsv(x, p["saturation"])
            else:  # ColorJiggle: adjust_hue(x, factor · 2π)
                x = _hue_radians(x, p["hue"] * 2 * math.pi)
    if p["gray"]:
        x = _gray(x)
    if p["flip"]:
        x = x.flip(-1)
    if p["blur"]:
        x = _blur2d(x, ksize, p["sigma"])
    return x


def _ser_equimod(img: Image.Image, p: dict, size: int, solarize: bool) -> torch.Tensor:
    """SER's ParamCompose on PIL: ParamRandomResizedCrop, ParamColorJitter, ParamGaussianBlur
    (torchvision's F.gaussian_blur, 9×9), ParamSolarize(128), ToTensor."""
    i, j, h, w = (int(p[k]) for k in ("top", "left", "height", "width"))
    im = F.resized_crop(img, i, j, h, w, [size, size], F.InterpolationMode.BILINEAR)
    if p["flip"]:
        im = F.hflip(im)
    if p["jitter"]:
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        names = ("brightness", "contrast", "saturation", "hue")
        for k in range(4):
            o = int(p[f"order{k}"])
            im = ops[o](im, p[names[o]])
    if p["gray"]:
        im = F.rgb_to_grayscale(im, num_output_channels=3)
    if p["blur"]:
        im = F.gaussian_blur(im, [9, 9], [p["sigma"], p["sigma"]])
    if solarize and p["solarize"]:
        im = F.solarize(im, 128)
    return F.to_tensor(im).double()


# ---- AugSelf --------------------------------------------------------------------------------


def test_augself_draws_are_sers():
    augs = _ser_augs("augself")
    for pipe in augs.globals:
        assert pipe.kernel == 23 and pipe.interpolation == F.InterpolationMode.BILINEAR
        d = _draws(pipe)
        a = _area(d)
        assert a.min() >= 0.08 - 1e-3 and a.max() <= 1.0 and a.mean() > 0.4
        assert _within_binomial(d[:, IDX["blur"]].sum(), N_DRAWS, 0.5)
        assert _within_binomial(d[:, IDX["jitter"]].sum(), N_DRAWS, 0.8)
        assert _within_binomial(d[:, IDX["gray"]].sum(), N_DRAWS, 0.2)
        assert _within_binomial(d[:, IDX["flip"]].sum(), N_DRAWS, 0.5)
        assert d[:, IDX["solarize"]].sum() == 0
        on = d[:, IDX["jitter"]] > 0
        sat, hue = d[on, IDX["saturation"]], d[on, IDX["hue"]]
        # Saturation 0.4 (the base methods' 0.2 would stay inside [0.8, 1.2]).
        assert sat.min() >= 0.6 and sat.max() <= 1.4 and (sat > 1.3).any() and (sat < 0.7).any()
        assert hue.abs().max() <= 0.1
        blurred = d[:, IDX["blur"]] > 0
        sig = d[blurred, IDX["sigma"]]
        assert sig.min() >= 0.1 and sig.max() <= 2.0


def test_augself_one_jitter_order_per_view_chunk():
    pipe = _ser_augs("augself").globals[0]
    torch.manual_seed(1)
    img = torch.empty(3, 300, 400)
    p = _chunk_order(pipe, [pipe.sample(img) for _ in range(64)])
    orders = {
        tuple(q[[IDX[f"order{k}"] for k in range(4)]].tolist()) for q in p if q[IDX["jitter"]] > 0
    }
    assert len(orders) == 1


@pytest.mark.slow
@pytest.mark.parametrize("defer", [False, True])
def test_augself_pixels_match_sers_transform(defer):
    """Every image of a chunk within 2e-4 (on the [0, 1] scale) of SER's t1/t2, at 224 px."""
    size = 224
    augs = _ser_augs("augself", size)
    policy = ViewPolicy("2view", augs, defer=defer)
    images = [_image(k=k) for k in range(6)]
    batch = policy(images, seed=3)
    if defer:
        from harness.data.deferred import finish

        batch = finish(batch)
    assert batch["jitter"] == (0.4, 0.4, 0.4, 0.1)
    seen = set()
    for v in range(2):
        got = _unnorm(batch["views"][v][0].double())
        for n, img in enumerate(images):
            p = decode(batch["params"][v][n])
            want = _ser_augself(img, p, size, 23)
            err = (got[n] - want).abs().max().item()
            assert err < 2e-4, (v, n, p, err)
            seen |= {k for k in ("jitter", "gray", "blur", "flip") if p[k]}
    assert seen == {"jitter", "gray", "blur", "flip"}  # every op was exercised


def test_augself_colour_targets_use_the_views_jitter_ranges():
    """SER's _extract_w divides by the width of ColorJitter_augself's ranges: 0.8 for
    saturation under its pipeline, 0.4 under the base's."""
    from methods.augself import color_vector

    p = torch.zeros(1, len(IDX))
    p[0, IDX["jitter"]], p[0, IDX["saturation"]] = 1, 1.4
    p[0, IDX["brightness"]] = p[0, IDX["contrast"]] = 1
    assert color_vector(p, A.AUGSELF_JITTER)[0, 2].item() == pytest.approx(0.5)
    assert color_vector(p)[0, 2].item() == pytest.approx(1.0)


# ---- STL ------------------------------------------------------------------------------------


def test_stl_draws_squash_and_share_one_crop_per_pair():
    size = 224
    augs = _ser_augs("stl", size)
    policy = ViewPolicy("paired", augs)
    shapes = [(300, 400), (500, 333), (224, 224), (90, 120)]
    images = [torch.empty(3, *shapes[k % 4]) for k in range(N_DRAWS)]
    torch.manual_seed(0)
    shared = ["top", "left", "height", "width", "jitter", "brightness", "contrast"]
    shared += ["saturation", "hue", "gray", *(f"order{k}" for k in range(4))]
    own = ["flip", "blur", "sigma"]
    for pipe in augs.globals:
        assert pipe.kernel == 9 and pipe.squash
        d = torch.stack(policy._global_params(pipe, images))
        assert (d[:, IDX["img_h"]] == size).all() and (d[:, IDX["img_w"]] == size).all()
        a = _area(d)
        assert a.min() >= 0.2 - 1e-2 and a.max() <= 1.0
        even, odd = d[0::2], d[1::2]
        for k in shared:
            assert torch.equal(even[:, IDX[k]], odd[:, IDX[k]]), k
        for k in own:
            assert not torch.equal(even[:, IDX[k]], odd[:, IDX[k]]), k
        assert _within_binomial(d[:, IDX["blur"]].sum(), N_DRAWS, 0.5)
        assert _within_binomial(d[:, IDX["flip"]].sum(), N_DRAWS, 0.5)
        assert _within_binomial(even[:, IDX["jitter"]].sum(), N_DRAWS // 2, 0.8)
        assert _within_binomial(even[:, IDX["gray"]].sum(), N_DRAWS // 2, 0.2)
        assert d[:, IDX["solarize"]].sum() == 0
        sat = d[d[:, IDX["jitter"]] > 0, IDX["saturation"]]
        assert sat.min() >= 0.8 and sat.max() <= 1.2


@pytest.mark.parametrize("defer", [False, True])
def test_stl_pixels_match_sers_transform(defer):
    """Within 3/255 on the [0, 1] scale of SER's squash + aligned + invariant transforms, mean
    error under 1.5e-3: the harness rounds the resized slice to uint8 (≤ 0.5/255, exact in
    ``test_stl_crop_is_the_squashed_slice``), which the jitter amplifies (contrast ≤ 1.4, the
    HSV steps where max − min is small)."""
    size = 224
    augs = _ser_augs("stl", size)
    policy = ViewPolicy("paired", augs, defer=defer)
    images = [_image(256 + 8 * k, 320 - 16 * k, k=k) for k in range(6)]
    batch = policy(images, seed=5)
    if defer:
        from harness.data.deferred import finish

        batch = finish(batch)
    seen = set()
    for v in range(2):
        got = _unnorm(batch["views"][v][0].double())
        for n, img in enumerate(images):
            p = decode(batch["params"][v][n])
            want = _ser_stl(img, p, size, 9)
            err = (got[n] - want).abs()
            assert err.max().item() < 3 / 255 and err.mean().item() < 1.5e-3, (v, n, p, err.max())
            seen |= {k for k in ("jitter", "gray", "blur", "flip") if p[k]}
    assert {"jitter", "blur", "flip"} <= seen


def test_stl_crop_is_the_squashed_slice():
    """The geometric part alone: SER's Resize((S, S)) then kornia's slice + bilinear resize
    (align_corners=True), in float64, rounds to the harness's uint8 crop (≤ 0.5/255, + 1e-5 for float32 at ties)."""
    size = 224
    pipe = _ser_augs("stl", size).globals[0]
    torch.manual_seed(4)
    for k in range(8):
        img = _image(200 + 40 * k, 330 - 20 * k, k=k)
        params = pipe.sample(img)
        p = decode(params)
        x = F.to_tensor(F.resize(img, [size, size], F.InterpolationMode.BILINEAR)).double()
        i, j, h, w = (int(p[n]) for n in ("top", "left", "height", "width"))
        want = nnf.interpolate(
            x[None, :, i : i + h, j : j + w], (size, size), mode="bilinear", align_corners=True
        )[0]
        if p["flip"]:
            want = want.flip(-1)
        got = pipe.crop_uint8(img, params).double() / 255
        assert (got - want).abs().max().item() <= 0.5 / 255 + 1e-5  # float32 at a .5 tie


# ---- EquiMod --------------------------------------------------------------------------------


def test_equimod_draws_and_fixed_standardisation():
    augs = _ser_augs("equimod")
    blur, sol = (1.0, 0.1), (0.0, 0.2)
    for v, pipe in enumerate(augs.globals):
        assert pipe.kernel == 9 and pipe.flavour == "torchvision"
        d = _draws(pipe)
        assert _within_binomial(d[:, IDX["blur"]].sum(), N_DRAWS, blur[v])
        assert _within_binomial(d[:, IDX["solarize"]].sum(), N_DRAWS, sol[v])
        assert _within_binomial(d[:, IDX["jitter"]].sum(), N_DRAWS, 0.8)
        a = _area(d)
        assert a.min() >= 0.08 - 1e-3
    from methods.equimod import VECTOR_NAMES

    assert A.EQUIMOD_VECTOR == VECTOR_NAMES and len(A.EQUIMOD_MEAN) == len(VECTOR_NAMES) == 18
    stats = A.configure(Augmentations(MoCoV3.augmentation, 224, 16), ["equimod"])
    policy = ViewPolicy("3view", _ser_augs("equimod", 32), standardise=True, stats=stats)
    batch = policy([_image(40, 48, k) for k in range(4)], seed=0)
    idx = [IDX[n] for n in VECTOR_NAMES]
    mean, std = torch.tensor(A.EQUIMOD_MEAN), torch.tensor(A.EQUIMOD_STD)
    for p, z in zip(batch["params"], batch["params_z"]):
        torch.testing.assert_close(z[:, idx], (p[:, idx] - mean) / std)


def test_equimod_pixels_match_sers_transform():
    """Within 1/255 + 1e-6 of SER's ParamCompose (the harness's separable blur may round to the
    next uint8 level), the clean view exactly Resize(256) + CenterCrop(224), bilinear."""
    size = 224
    augs = _ser_augs("equimod", size)
    policy = ViewPolicy("3view", augs)
    images = [_image(k=k) for k in range(6)]
    batch = policy(images, seed=2)
    for v in range(2):
        got = _unnorm(batch["views"][v][0].double())
        for n, img in enumerate(images):
            p = decode(batch["params"][v][n])
            want = _ser_equimod(img, p, size, solarize=v == 1)
            assert (got[n] - want).abs().max().item() < 1 / 255 + 1e-6, (v, n, p)
    for n, img in enumerate(images):
        im = F.center_crop(F.resize(img, 256, F.InterpolationMode.BILINEAR), 224)
        want = F.to_tensor(im).double()
        torch.testing.assert_close(_unnorm(batch["clean"][n : n + 1].double())[0], want)


# ---- the switch -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["augself", "stl", "equimod"])
def test_base_switch_gives_the_base_methods_views(name):
    from harness.config.build import build_method
    from harness.data.batches import build_policy

    cfg = C.resolve(f"moco_v3+{name}", "micro", overrides=["views.addon_data=base"])
    policy = build_policy(build_method(cfg), cfg)
    assert all(type(p) is Pipeline for p in policy.augs.globals)
    assert policy.augs.globals == Augmentations(MoCoV3.augmentation, 16, 8).globals
    assert policy.stats is None
    cfg = C.resolve(f"moco_v3+{name}", "micro")
    policy = build_policy(build_method(cfg), cfg)
    assert all(isinstance(p, A.AddonPipeline) for p in policy.augs.globals)


def test_setting_is_validated_and_keys_only_add_on_runs():
    assert checks.CHOICES["views.addon_data"] == ("ser", "base")
    with pytest.raises(HarnessError, match="views.addon_data=x: choose one of ser, base"):
        C.resolve("moco_v3+augself", "micro", overrides=["views.addon_data=x"])
    ids = {
        m: C.run_id(C.resolve(m, "micro", overrides=["views.addon_data=base"]))
        for m in ("moco_v3", "moco_v3+ser", "moco_v3+augself")
    }
    assert ids["moco_v3"] == C.run_id(C.resolve("moco_v3", "micro"))
    assert ids["moco_v3+ser"] == C.run_id(C.resolve("moco_v3+ser", "micro"))
    assert ids["moco_v3+augself"] != C.run_id(C.resolve("moco_v3+augself", "micro"))


def test_two_add_ons_with_their_own_loaders_are_refused():
    with pytest.raises(HarnessError, match="views.addon_data=base"):
        A.addon_data_for(["augself", "equimod"])
    assert A.addon_data_for(["augself", "equimod"], "base") is None


def test_departure_measures_its_effect():
    from methods.departures import DEPARTURES

    d = next(d for d in DEPARTURES if d.key == "addon-data")
    assert d.measure == "harness.data.addon_views:addon_data_effect" and d.other
    line = A.addon_data_effect()
    # AugSelf blurs about half of each view (base: 1.0 / 0.1) and solarizes none; STL crops
    # ≥ 0.2 of the squashed image (base ≥ 0.08 of the image); EquiMod solarizes 0.2 of view 2.
    aug = line.split("augself blurred ")[1].split(";")[0]
    v1, v2 = (float(x) for x in aug.split(" (")[0].split("/"))
    assert abs(v1 - 0.5) < 0.15 and abs(v2 - 0.5) < 0.15
    assert aug.split("solarized ")[1].startswith("0.00 (")
    stl = line.split("stl ")[1].split(";")[0]
    ser_area, base_area = (float(x) for x in stl.split("crop area ")[1].strip(")").split(" ("))
    assert ser_area > base_area + 0.03
    assert float(line.split("fixed vs fitted ")[1]) > 0


@pytest.fixture(scope="module")
def data(micro_data):
    return micro_data


@pytest.mark.parametrize("name", ["augself", "stl", "equimod"])
def test_a_micro_pretraining_step_runs_on_the_add_on_loader(name, data, tmp_path):
    import json

    from harness.train import pretrain

    root, d = data
    cfg = C.with_runtime(C.resolve(f"moco_v3+{name}", "micro", max_steps=1), quiet=True)
    assert cfg["views"]["addon_data"] == "ser"
    pretrain(cfg, tmp_path / name, d)
    log = json.loads((tmp_path / name / "log.jsonl").read_text().splitlines()[0])
    losses = [v for k, v in log.items() if k.startswith("loss")]
    assert losses and all(math.isfinite(v) for v in losses)
