"""``Pipeline.photometric`` for a whole batch at once, on any device.

The loader's workers then only crop (``Pipeline.crop_uint8``) and the colour jitter, grayscale,
blur and solarize run batched where the batch lives (the training device, or a worker's CPU).
Every image keeps its own recorded parameters: flags, jitter order and factors, σ. The ops are
torchvision's tensor ops; PIL, which ``Pipeline.photometric`` uses, rounds to uint8 after each
op, so the two agree to within that rounding (tests/data/test_photometric.py).

The ``kornia`` flavour (``augment``'s docstring) swaps in kornia's ColorJiggle ops and reads
each image's solarize threshold from its parameters; both flavours share grayscale and blur.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from harness.data.augment import IDX, MEAN, STD
from harness.data.blur import gaussian_blur

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights

# The ops below work in place on the copy ``render`` hands them: on CPU, fresh image-sized
# temporaries (page faults) cost more than the arithmetic.


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return x.mul_(f).clamp_(0, 1)  # a blend with black


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    # f·x + (1 − f)·mean(gray), as torchvision's _blend.
    return x.lerp_(_gray(x).mean((1, 2, 3), keepdim=True), 1 - f).clamp_(0, 1)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return x.lerp_(_gray(x), 1 - f).clamp_(0, 1)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    """torchvision's rgb→hsv, h + f (mod 1), hsv→rgb, in closed form: with v = max and
    v·s = max − min = c, channel n is v − c·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6
    (n = 5, 3, 1 for R, G, B), and min(k, 4 − k) = 2 − |k − 2|."""
    maxc, imax = x.max(1, keepdim=True)  # the first maximum on ties: r, g, b, as torchvision
    c = maxc - x.amin(1, keepdim=True)
    r, g, b = x.unbind(1)
    # Hue in sixths of a turn: 2·argmax + (next − previous channel) / c, plus the shift.
    h6 = torch.stack((g - b, b - r, r - g), 1).gather(1, imax)
    h6 = h6.div_(c.clamp_min(torch.finfo(x.dtype).tiny)).add_(imax, alpha=2).add_(6 * f)
    k = torch.add(h6, x.new_tensor((5.0, 3.0, 1.0)).view(1, 3, 1, 1), out=x).remainder_(6)
    return k.sub_(2).abs_().neg_().add_(2).clamp_(0, 1).mul_(c).neg_().add_(maxc)


def _solarize(x: Tensor, threshold: Tensor) -> Tensor:
    # PIL solarizes uint8 values ≥ 128, kornia values ≥ its threshold: x ↦ 1 − x there. A
    # lerp with 0/1 weights is exact and, on CPU, far cheaper than torch.where.
    return x.lerp_(1 - x, (x >= threshold).to(x.dtype))


def _k_brightness(x: Tensor, f: Tensor) -> Tensor:
    return x.add_(f - 1).clamp_(0, 1)  # kornia: adjust_brightness(x, factor − 1), additive


def _k_contrast(x: Tensor, f: Tensor) -> Tensor:
    return x.mul_(f).clamp_(0, 1)  # kornia: multiplicative, no blend with the mean


def _k_saturation(x: Tensor, f: Tensor) -> Tensor:
    """kornia's HSV saturation, s ↦ clamp(s·f, 0, 1), in closed form: with v = max and
    c = max − min, every channel is v − c·w(hue), so scaling c by r = min(f, v / c) (the
    clamp) moves each channel towards v: x ↦ v + r·(x − v). Grey pixels (c = 0) stay."""
    v = x.amax(1, keepdim=True)
    c = v - x.amin(1, keepdim=True)
    r = torch.minimum(f.expand_as(c), v / c.clamp_min(torch.finfo(x.dtype).tiny))
    return x.sub_(v).mul_(r).add_(v)


def _augself_hue(x: Tensor, f: Tensor) -> Tensor:
    # SER's ColorJitter_augself hands the drawn factor f ∈ [-0.1, 0.1] to kornia's adjust_hue,
    # which shifts hue by f radians (kornia's own ColorJitter multiplies by 2π first).
    return _hue(x, f / (2 * math.pi))


_JITTER = {  # ColorJitter's / ColorJiggle's op indices 0..3
    "torchvision": (_brightness, _contrast, _saturation, _hue),
    # kornia shifts hue in HSV by 2π·f with f drawn as torchvision's: the same operation.
    "kornia": (_k_brightness, _k_contrast, _k_saturation, _hue),
    # SER's AugSelf (kornia 0.4.1, harness/data/addon_views.py): torchvision's brightness and
    # contrast, kornia's saturation, the hue shift in radians.
    "augself": (_brightness, _contrast, _k_saturation, _augself_hue),
}
_FACTORS = [IDX[n] for n in ("brightness", "contrast", "saturation", "hue")]
# On CPU, a few images at a time stay in cache through all the ops: at 224 px, chunks of 8
# took 10–45% less CPU time than one pass over 64 images.
_CPU_CHUNK = 8


def render(
    images: Tensor,
    params: Tensor,
    ksize: int,
    dtype: torch.dtype = torch.float32,
    flavour: str = "torchvision",
) -> Tensor:
    """Jitter, grayscale, blur, solarize and normalise uint8 crops ``images`` [N, 3, H, W] with
    their parameter vectors ``params`` [N, len(PARAMS)] (``augment.PARAMS``); ``ksize`` is the
    blur kernel (the pipeline's ``kernel``). Returns [N, 3, H, W] in ``dtype``."""
    out = torch.empty(images.shape, dtype=dtype, device=images.device)
    step = _CPU_CHUNK if images.device.type == "cpu" else max(1, len(images))
    for i in range(0, len(images), step):
        _render(images[i : i + step], params[i : i + step], ksize, out[i : i + step], flavour)
    return out


def _render(images: Tensor, params: Tensor, ksize: int, x: Tensor, flavour: str) -> None:
    """``render`` into ``x``, every op in place."""
    dev = images.device
    # Flags and orders steer which images each op touches; read on the host so that a CUDA
    # batch is never synchronised (nothing to read back when params are on the CPU already).
    host = params.detach().to("cpu", torch.float32)
    on = {n: host[:, IDX[n]] > 0.5 for n in ("jitter", "gray", "blur", "solarize")}
    factors = params[:, _FACTORS].to(dev, x.dtype)[:, :, None, None, None]  # [N, 4, 1, 1, 1]
    torch.div(images, 255, out=x)

    def apply(mask: Tensor, fn) -> None:
        """x[i] = fn(x[i], i) where ``mask`` holds: work only on those (fn gets a copy)."""
        idx = mask.nonzero().flatten()
        if len(idx):
            idx = idx.to(dev)
            x.index_copy_(0, idx, fn(x.index_select(0, idx), idx))

    for k in range(4):  # each order position, each op: the images that apply it there
        order = host[:, IDX[f"order{k}"]]
        for o, op in enumerate(_JITTER[flavour]):
            apply(on["jitter"] & (order == o), lambda y, i, o=o, op=op: op(y, factors[i, o]))
    apply(on["gray"], lambda y, i: _gray(y).expand_as(y))
    sigma = params[:, IDX["sigma"]].to(dev, torch.float32)
    apply(on["blur"], lambda y, i: gaussian_blur(y, ksize, sigma[i]))
    threshold = params[:, IDX["threshold"]].to(dev, x.dtype)[:, None, None, None]
    apply(on["solarize"], lambda y, i: _solarize(y, threshold[i]))
    mean, std = (x.new_tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    x.sub_(mean).div_(std)
