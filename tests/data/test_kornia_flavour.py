"""The ``kornia`` photometric flavour computes what the public SER code's ``Aug_equi.inv1`` /
``inv2`` compute (issue 13, point 9), and every view of a SER batch draws from it.

References are written here from kornia's definitions, per pixel in float64 with Python's
``colorsys`` for the HSV steps: ColorJiggle's brightness adds (factor − 1), contrast
multiplies, saturation scales S and hue shifts H in HSV, each clamped to [0, 1];
RandomSolarize(thresholds=0.5) draws its threshold from U(0, 1) and maps x ≥ t to 1 − x;
RandomGaussianBlur has a 9×9 kernel at 224 px.
"""

import colorsys

import pytest
import torch
from PIL import Image

from harness import config as C
from harness.data.augment import IDX, MEAN, SOLARIZE_AT, STD, Pipeline, blur_kernel, encode
from harness.data.batches import PretrainBatches, build_policy
from harness.data.deferred import finish
from harness.data.photometric import render

IDENTITY = dict(order0=0, order1=1, order2=2, order3=3)


def _image(n=2, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255).round().to(torch.uint8)


def _unnormalise(x):
    mean, std = (torch.tensor(v, dtype=x.dtype).view(1, 3, 1, 1) for v in (MEAN, STD))
    return x * std + mean


def _per_pixel(img, fn):
    """fn(r, g, b) → (r, g, b) on every pixel of a [N, 3, H, W] float64 tensor."""
    out = img.clone()
    for n in range(img.shape[0]):
        for i in range(img.shape[2]):
            for j in range(img.shape[3]):
                out[n, :, i, j] = torch.tensor(fn(*img[n, :, i, j].tolist()))
    return out


def _clamp(v):
    return min(1.0, max(0.0, v))


def _kornia_op(op, f):
    if op == "brightness":
        return lambda *rgb: [_clamp(c + f - 1) for c in rgb]
    if op == "contrast":
        return lambda *rgb: [_clamp(c * f) for c in rgb]
    if op == "saturation":

        def sat(*rgb):
            h, s, v = colorsys.rgb_to_hsv(*rgb)
            return colorsys.hsv_to_rgb(h, _clamp(s * f), v)

        return sat

    def hue(*rgb):
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        return colorsys.hsv_to_rgb((h + f) % 1.0, s, v)

    return hue


@pytest.mark.parametrize(
    "op,factor",
    [
        ("brightness", 1.3),
        ("brightness", 0.7),
        ("contrast", 1.35),
        ("contrast", 0.65),
        ("saturation", 1.2),
        ("saturation", 0.8),
        ("hue", 0.08),
        ("hue", -0.1),
    ],
)
def test_each_jitter_op_is_kornias(op, factor):
    x = _image()
    p = encode(dict(jitter=1, **IDENTITY, **{op: factor}))
    P = p.expand(len(x), -1).clone()
    got = _unnormalise(render(x, P, 3, dtype=torch.float64, flavour="kornia"))
    want = _per_pixel(x.double() / 255, _kornia_op(op, factor))
    assert (got - want).abs().max() < 1e-6  # factors are stored in float32
    if op != "hue":  # torchvision's hue is the same operation; the others are not
        tv = _unnormalise(render(x, P, 3, dtype=torch.float64, flavour="torchvision"))
        assert (tv - want).abs().max() > 1e-2


def test_jitter_order_is_followed():
    x = _image(seed=1)
    ops = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.2, "hue": 0.05}
    names = ("brightness", "contrast", "saturation", "hue")
    for order in ((0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)):
        p = encode(dict(jitter=1, **ops, **{f"order{k}": o for k, o in enumerate(order)}))
        got = _unnormalise(render(x, p.expand(2, -1).clone(), 3, torch.float64, "kornia"))
        want = x.double() / 255
        for o in order:
            want = _per_pixel(want, _kornia_op(names[o], ops[names[o]]))
        assert (got - want).abs().max() < 1e-6  # factors are stored in float32


def test_solarize_threshold_is_drawn_per_image_and_used():
    pipe = Pipeline(32, (0.2, 1.0), solarize_p=1.0, flavour="kornia")
    torch.manual_seed(0)
    t = torch.tensor([pipe.sample_photometric({})["threshold"] for _ in range(2000)])
    assert 0.47 < float(t.mean()) < 0.53 and t.min() < 0.02 and t.max() > 0.98
    # torchvision's pipeline keeps PIL's 128.
    tv = Pipeline(32, (0.2, 1.0), solarize_p=1.0)
    assert {tv.sample_photometric({})["threshold"] for _ in range(20)} == {SOLARIZE_AT}
    x = _image(n=1, size=8)
    for thr in (0.1, 0.5, 0.9):
        p = encode(dict(solarize=1, threshold=thr))[None]
        got = _unnormalise(render(x, p, 3, torch.float64, "kornia"))
        v = x.double() / 255
        assert torch.allclose(got, torch.where(v < thr, v, 1 - v), atol=1e-6)


def test_blur_kernel_is_9_at_224_px_and_scales_with_the_crop():
    assert blur_kernel(224, "kornia")[0] == 9 and blur_kernel(224)[0] == 23
    assert Pipeline(224, (0.2, 1.0), flavour="kornia").kernel == 9
    assert blur_kernel(96, "kornia")[0] == 5 and blur_kernel(32, "kornia")[0] == 3


def test_unknown_flavour_names_the_setting():
    with pytest.raises(Exception, match="views.photometric"):
        Pipeline(32, (0.2, 1.0), flavour="pil")


def _policy(name, size, defer, overrides=()):
    cfg = C.resolve(
        name, "micro", overrides=[f"model.img_size={size}", "model.patch_size=16", *overrides]
    )
    policy = build_policy(C.build_method(cfg), cfg)
    policy.defer = defer
    return policy


def _photos(n, size=260):
    g = torch.Generator().manual_seed(3)
    return [
        Image.fromarray((torch.rand(size, size + 20, 3, generator=g) * 255).byte().numpy())
        for _ in range(n)
    ]


@pytest.mark.parametrize("flavour", ["kornia", "torchvision"])
def test_deferred_rendering_uses_the_pipelines_kernel_at_224_px(flavour):
    # Worker-rendered and device-rendered views of one batch agree at paper size (a wrong
    # kernel, e.g. 3 instead of 9 or 23, moves blurred images far more than PIL's rounding).
    ims = _photos(4)
    over = [f"views.photometric={flavour}"]
    a = _policy("moco_v3", 224, False, over)(ims, seed=1)
    b = finish(_policy("moco_v3", 224, True, over)(ims, seed=1))
    for v in range(2):
        d = (a["views"][v][0] - b["views"][v][0]).abs().mean()
        assert d < (1e-6 if flavour == "kornia" else 0.05), (v, float(d))


def _b2(policy, seed):
    """The parameters of one batch's SER views (chunk 1 of each view), deferred."""
    imgs = [(im, 0) for im in _photos(32, 64)]
    batch = PretrainBatches(imgs, policy, 32, seed=seed)[0]
    out = []
    for v in range(2):
        chunk = batch["views"][v][1]
        assert chunk.blur == 9 and chunk.flavour == "kornia"
        out.append(chunk.params)
    return out


def test_ser_equivariance_views_draw_the_public_b2_augmentation():
    # Aug_equi.inv1 / inv2: jitter p 0.8, grayscale 0.2, blur p 1.0 (first) / 0.1 (second),
    # solarize p 0 / 0.2 with a U(0, 1) threshold, a 9×9 kernel at 224 px.
    policy = _policy("moco_v3+ser@r0.5", 224, True)
    draws = [_b2(policy, seed) for seed in range(6)]
    p = [torch.cat([d[v] for d in draws]) for v in range(2)]
    rate = [
        {k: float(p[v][:, IDX[k]].mean()) for k in ("jitter", "gray", "blur", "solarize")}
        for v in range(2)
    ]
    tol = 4 * (0.25 / len(p[0])) ** 0.5
    assert rate[0]["blur"] == 1.0 and rate[0]["solarize"] == 0.0
    assert abs(rate[1]["blur"] - 0.1) < tol and abs(rate[1]["solarize"] - 0.2) < tol
    for v in range(2):
        assert abs(rate[v]["jitter"] - 0.8) < tol and abs(rate[v]["gray"] - 0.2) < tol
    # One jitter order per chunk, as one ColorJiggle call per view chunk.
    orders = [IDX[f"order{k}"] for k in range(4)]
    for d in draws:
        for chunk in d:
            jit = chunk[chunk[:, IDX["jitter"]] > 0][:, orders]
            assert (jit == jit[0]).all()
    assert len({tuple(d[0][d[0][:, IDX["jitter"]] > 0][0, orders].tolist()) for d in draws}) > 1
    sol = p[1][p[1][:, IDX["solarize"]] > 0, IDX["threshold"]]
    assert len(sol) > 1 and len(set(sol.tolist())) == len(sol)  # drawn per image
