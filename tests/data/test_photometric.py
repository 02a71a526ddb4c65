"""Batched photometric augmentation (harness.data.photometric, harness.data.blur): the same
images as the per-image pipeline, from the same, unchanged, parameter draws."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as nnf
from torchvision.transforms import functional as F
from torchvision.transforms import transforms as T

from harness.data.augment import IDX, JITTER, MEAN, STD, Pipeline, blur_kernel, decode, encode
from harness.data.blur import _depthwise, gaussian_blur, gaussian_kernel1d
from harness.data.photometric import render

S = 64  # crop size of the render tests: blur kernel 7
ORDERS = [f"order{k}" for k in range(4)]


def _images(n: int, size: int = S, seed: int = 0) -> torch.Tensor:
    """uint8 crops: smooth random colours (saturated, dark and bright regions) plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = nnf.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic")
    x = x + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _sampled(n: int, seed: int = 0) -> torch.Tensor:
    """Parameter vectors drawn by a pipeline that takes every branch often."""
    pipe = Pipeline(S, (0.2, 1.0), jitter_p=0.8, gray_p=0.3, blur_p=0.5, solarize_p=0.5)
    torch.manual_seed(seed)
    P = torch.stack([encode(pipe.sample_photometric({})) for _ in range(n)])
    on = P[:, [IDX[k] for k in ("jitter", "gray", "blur", "solarize")]]
    assert ((on == 0).any(0) & (on == 1).any(0)).all(), "every branch both taken and not"
    assert len({tuple(o) for o in P[:, [IDX[k] for k in ORDERS]].tolist()}) > 8
    return P


def _strong(n: int) -> torch.Tensor:
    """Every image jittered with the extreme factors, in a different order each: what goes
    wrong with a wrong order or factor shows here."""
    perms = itertools.cycle(itertools.permutations(range(4)))
    return torch.stack(
        [
            encode(
                dict(
                    jitter=1,
                    brightness=1.4,
                    contrast=0.6,
                    saturation=1.2,
                    hue=0.1 * (-1) ** i,
                    gray=float(i % 5 == 0),
                    blur=float(i % 2),
                    sigma=0.8,
                    solarize=float(i % 3 == 0),
                    **dict(zip(ORDERS, next(perms))),
                )
            )
            for i in range(n)
        ]
    )


def _tensor_reference(img: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Pipeline.photometric's steps, one image at a time, with torchvision's float tensor ops."""
    p = decode(params)
    x = img.float() / 255
    if p["jitter"]:
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        names = ("brightness", "contrast", "saturation", "hue")
        for k in range(4):
            o = int(p[f"order{k}"])
            x = ops[o](x, p[names[o]])
    if p["gray"]:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    if p["blur"]:
        k = blur_kernel(S)[0]
        x = F.gaussian_blur(x, [k, k], [p["sigma"], p["sigma"]])
    if p["solarize"]:
        x = F.solarize(x, 128 / 255)
    return F.normalize(x, MEAN, STD)


def _pil_reference(images: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    pipe = Pipeline(S, (0.2, 1.0))
    return torch.stack([pipe.photometric(F.to_pil_image(im), p) for im, p in zip(images, P)])


# ---- (a) separable blur ---------------------------------------------------------------------


def _depthwise_blur(x, ksize, sigma):
    """gaussian_blur's branch for CUDA and other devices (depthwise conv), run on the CPU."""
    pad = ksize // 2
    return _depthwise(nnf.pad(x, (pad,) * 4, mode="reflect"), gaussian_kernel1d(ksize, sigma))


@pytest.mark.parametrize("blur", [gaussian_blur, _depthwise_blur])
@pytest.mark.parametrize("ksize, shape", [(3, (17, 20)), (7, (32, 32)), (23, (24, 40))])
def test_separable_blur_equals_torchvision_2d(blur, ksize, shape):
    x = torch.rand(5, 3, *shape, generator=torch.Generator().manual_seed(ksize))
    sigma = torch.tensor([0.1, 0.45, 1.0, 2.0, 3.3])  # one σ per image, in one batch
    got = blur(x, ksize, sigma)
    for i, s in enumerate(sigma.tolist()):
        ref = F.gaussian_blur(x[i], [ksize, ksize], [s, s])
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=0)
        half = (ksize - 1) / 2
        k = torch.exp(-0.5 * (torch.linspace(-half, half, ksize) / s) ** 2)
        torch.testing.assert_close(gaussian_kernel1d(ksize, sigma)[i], k / k.sum())


def test_blur_keeps_bf16():
    x = torch.rand(2, 3, 20, 20)
    got = gaussian_blur(x.bfloat16(), 7, torch.tensor([0.5, 1.5]))
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    torch.testing.assert_close(
        got.float(), gaussian_blur(x, 7, torch.tensor([0.5, 1.5])), atol=1e-2, rtol=0
    )


def test_pipeline_blur_is_torchvision_blur_up_to_rounding():
    """Pipeline.photometric's blur keeps torchvision's uint8 → float → blur → round path."""
    img = F.to_pil_image(_images(1, size=40)[0])
    got = Pipeline(S, (0.2, 1.0)).photometric(img, encode(dict(blur=1, sigma=1.1)))
    k = blur_kernel(S)[0]
    ref = F.normalize(F.to_tensor(F.gaussian_blur(img, [k, k], [1.1, 1.1])), MEAN, STD)
    # The k×k and the separable sums differ by float rounding, which can move a value across
    # a .5 before rounding: then by one level (≤ 1/(255·0.225) normalised), and rarely.
    level = 1 / (255 * min(STD))
    assert (got - ref).abs().max() <= level + 1e-6
    assert (got != ref).float().mean() < 1e-3


# ---- (b) render against the per-image pipeline ----------------------------------------------


def test_render_equals_torchvision_tensor_ops_per_image():
    """Same ops in float: equal to float rounding, so order, factors and hue are exact."""
    images, P = _images(30), _sampled(30)  # 30: the last CPU chunk is partial
    got = render(images, P, blur_kernel(S)[0])
    ref = torch.stack([_tensor_reference(im, p) for im, p in zip(images, P)])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    images, P = _images(24, seed=1), _strong(24)
    torch.testing.assert_close(
        render(images, P, blur_kernel(S)[0]),
        torch.stack([_tensor_reference(im, p) for im, p in zip(images, P)]),
        atol=1e-4,
        rtol=0,
    )


# Against PIL (Pipeline.photometric), in normalised units (one uint8 level ≈ 1/(255·0.225) ≈
# 0.017): PIL floors after every blend (≈ −0.5 level per jitter op), keeps hue and saturation in
# 8 bits and truncates the hue shift to int(255·h)/255 of a turn, so the two differ by ~1.5 levels
# on average (measured 0.022–0.026) and by up to ~20 levels on dark, saturated pixels (max 0.35).
# A wrong order, contrast or hue sign puts the mean at ≥ 0.21 on the strong batch (below).
PIL_MEAN, PIL_MAX = 0.035, 0.45


@pytest.mark.parametrize("params", [_sampled, _strong])
def test_render_matches_pil_pipeline(params):
    images, P = _images(24, seed=2), params(24)
    d = (render(images, P, blur_kernel(S)[0]) - _pil_reference(images, P)).abs()
    assert d.mean() < PIL_MEAN and d.max() < PIL_MAX


def test_pil_bound_catches_a_wrong_order_or_factor():
    images, P = _images(24, seed=2), _strong(24)
    ref = _pil_reference(images, P)
    wrong_order = P.clone()
    wrong_order[:, [IDX[k] for k in ORDERS]] = P[:, [IDX[k] for k in reversed(ORDERS)]]
    wrong_factor, wrong_hue = P.clone(), P.clone()
    wrong_factor[:, IDX["contrast"]] = 0.8
    wrong_hue[:, IDX["hue"]] *= -1
    for Q in (wrong_order, wrong_factor, wrong_hue):
        assert (render(images, Q, blur_kernel(S)[0]) - ref).abs().mean() > 2 * PIL_MEAN


# ---- (c) the parameters are those torchvision draws -----------------------------------------


def test_sample_draws_what_torchvision_draws(monkeypatch):
    """Pipeline.sample's vector = what pipe.torchvision() draws from the same seed: record its
    get_params returns and which flagged ops it applies."""
    pipe = Pipeline(96, (0.2, 1.0), blur_p=0.5, solarize_p=0.3)
    img = F.to_pil_image(_images(1, size=70)[0]).crop((0, 0, 70, 50))
    seen = {}

    def record(name, fn):
        def wrapped(*a, **k):
            seen[name] = out = fn(*a, **k)
            return out

        return wrapped

    for cls, name in ((T.RandomResizedCrop, "crop"), (T.ColorJitter, "jitter")):
        monkeypatch.setattr(cls, "get_params", staticmethod(record(name, cls.get_params)))
    monkeypatch.setattr(
        T.GaussianBlur, "get_params", staticmethod(record("sigma", T.GaussianBlur.get_params))
    )
    for fn in ("hflip", "rgb_to_grayscale", "solarize"):
        monkeypatch.setattr(F, fn, record(fn, getattr(F, fn)))
    for seed in range(40):
        seen.clear()
        torch.manual_seed(seed)
        pipe.torchvision()(img)
        torch.manual_seed(seed)
        p = decode(pipe.sample(img))
        assert [p[k] for k in ("top", "left", "height", "width")] == list(seen["crop"])
        assert (p["img_h"], p["img_w"]) == (50, 70)
        assert p["flip"] == ("hflip" in seen)
        assert p["jitter"] == ("jitter" in seen)
        if p["jitter"]:
            order, *factors = seen["jitter"]
            assert [p[k] for k in ORDERS] == order.tolist()
            assert [p[k] for k in ("brightness", "contrast", "saturation", "hue")] == pytest.approx(
                [float(f) for f in factors], abs=1e-6
            )
        assert p["gray"] == ("rgb_to_grayscale" in seen)
        assert p["blur"] == ("sigma" in seen)
        assert p["sigma"] == pytest.approx(seen.get("sigma", 0.0), abs=1e-6)
        assert p["solarize"] == ("solarize" in seen)


def test_drawn_flags_and_factors_follow_the_configuration():
    pipe = Pipeline(160, (0.2, 1.0), jitter_p=0.8, gray_p=0.2, blur_p=0.5, solarize_p=0.2)
    n = 4000
    torch.manual_seed(0)
    P = torch.stack([encode(pipe.sample_photometric({})) for _ in range(n)])
    for flag, prob in (("jitter", 0.8), ("gray", 0.2), ("blur", 0.5), ("solarize", 0.2)):
        frac = P[:, IDX[flag]].mean().item()
        assert abs(frac - prob) < 4 * math.sqrt(prob * (1 - prob) / n), flag  # binomial, 4σ
    jit, off = P[P[:, IDX["jitter"]] == 1], P[P[:, IDX["jitter"]] == 0]
    b, c, s, h = JITTER
    for name, lo, hi in (
        ("brightness", 1 - b, 1 + b),
        ("contrast", 1 - c, 1 + c),
        ("saturation", 1 - s, 1 + s),
        ("hue", -h, h),
    ):
        v = jit[:, IDX[name]]
        assert lo <= v.min() and v.max() <= hi and v.max() - v.min() > 0.98 * (hi - lo), name
        # Uniform: mean (lo + hi) / 2 within 4 standard errors (std (hi − lo) / √12).
        assert abs(v.mean() - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * len(v)), name
    orders = jit[:, [IDX[k] for k in ORDERS]]
    assert (orders.sort(1).values == torch.arange(4.0)).all()  # each a permutation
    assert len({tuple(o) for o in orders.tolist()}) == 24
    assert (off[:, [IDX[k] for k in ORDERS]] == torch.arange(4.0)).all()  # identity when off
    f = blur_kernel(160)[1]
    sig = P[P[:, IDX["blur"]] == 1, IDX["sigma"]]
    assert 0.1 * f <= sig.min() and sig.max() <= 2.0 * f
    assert abs(sig.mean() - 1.05 * f) < 4 * 1.9 * f / math.sqrt(12 * len(sig))
    assert (P[P[:, IDX["blur"]] == 0, IDX["sigma"]] == 0).all()


# ---- (d) dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_render_keeps_shape_and_dtype_without_nan(dtype):
    images, P = _images(16, seed=3), _strong(16)
    images[0] = 0  # black and white images: hue's and contrast's degenerate cases
    images[1] = 255
    got = render(images, P, blur_kernel(S)[0], dtype=dtype)
    assert got.shape == images.shape and got.dtype == dtype and got.isfinite().all()
    # bf16 keeps 8 significant bits: near 1 each op rounds by up to half a uint8 level, and
    # the hue (in sixths of a turn, up to 5) to 1/32 of a sixth: as coarse as PIL's 8-bit HSV.
    # Measured: mean 0.010, max 0.26 in normalised units; the PIL bounds hold.
    d = (got.float() - render(images, P, blur_kernel(S)[0])).abs()
    assert d.mean() < PIL_MEAN / 2 and d.max() < PIL_MAX
