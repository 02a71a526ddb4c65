"""SSL augmentations that record what they sampled.

AugSelf and EquiMod learn from the augmentation parameters, and STL applies one sampled
transformation to two images, so a view is built in two steps: ``sample`` draws every
parameter (in the order, and from the same torch RNG calls, as the equivalent torchvision
``Compose``), ``apply`` renders them: the same images as that ``Compose``, except that the
blur is separable (a value may round to the next uint8 level, rarely). Parameters are a flat
float vector with the named layout ``PARAMS``. ``harness.data.photometric.render`` is the
batched, device-side twin of ``photometric`` on the uint8 crops of ``crop_uint8``.

Two flavours of the photometric part draw the same parameters and render them differently:

* ``kornia`` (default, ``views.photometric``): what the public SER code runs on the GPU for
  every view of MoCo-v3, DINO and Barlow Twins (``Aug_equi.inv1``/``inv2``, kornia's
  ColorJiggle, RandomGrayscale, RandomGaussianBlur, RandomSolarize): brightness added
  (x + b − 1), contrast multiplied (c·x), saturation scaled in HSV, hue shifted in HSV, each
  clamped to [0, 1] in float; a 9×9 blur at 224 px; solarize above a threshold drawn from
  U(0, 1) per image (kornia's ``thresholds=0.5``). It renders through
  ``harness.data.photometric.render`` on either path. As kornia, one jitter order per view
  chunk (``views._chunk_order``).
* ``torchvision``: the base methods' original repositories (torchvision's ColorJitter, a
  23×23 blur at 224 px, solarize at 128), rendered with PIL in the workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms import transforms as T

from harness.data.blur import gaussian_blur
from harness.errors import HarnessError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BICUBIC, BILINEAR = InterpolationMode.BICUBIC, InterpolationMode.BILINEAR
RATIO = (3 / 4, 4 / 3)
JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue of the base methods
FLAVOURS = ("kornia", "torchvision")
SOLARIZE_AT = 128 / 255  # torchvision's (PIL's) threshold on the [0, 1] scale

PARAMS = (
    "top",
    "left",
    "height",
    "width",
    "img_h",
    "img_w",
    "flip",
    "jitter",
    "order0",
    "order1",
    "order2",
    "order3",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "gray",
    "blur",
    "sigma",
    "solarize",
    "threshold",
)
IDX = {n: i for i, n in enumerate(PARAMS)}
# Identity values where an operation was not applied (EquiMod's convention).
_IDENTITY = {
    "order0": 0,
    "order1": 1,
    "order2": 2,
    "order3": 3,
    "brightness": 1.0,
    "contrast": 1.0,
    "saturation": 1.0,
    "threshold": SOLARIZE_AT,
}


def blur_kernel(size: int, flavour: str = "torchvision") -> tuple[int, float]:
    """The kernel (23 px for torchvision's pipelines, 10 % of the crop; 9 px for the public
    code's kornia one) and σ range are for 224 px crops; scale both with the crop."""
    px = size * 0.1 if flavour == "torchvision" else size * 9 / 224
    return max(3, int(round(px)) // 2 * 2 + 1), size / 224


@dataclass(frozen=True)
class Pipeline:
    """RandomResizedCrop → flip → jitter (p) → grayscale → blur (p) → solarize (p) → tensor."""

    size: int
    scale: tuple[float, float]
    interpolation: InterpolationMode = BILINEAR
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.0
    jitter: tuple = JITTER
    flavour: str = "torchvision"
    # The crop size the blur (kernel and σ range) is set for, if not ``size``: SER's and DINO's
    # local crops take the 224-px views' blur at 96 px (views.Augmentations).
    blur_size: int | None = None

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise HarnessError(
                f"unknown photometric flavour '{self.flavour}': set views.photometric to "
                f"one of {', '.join(FLAVOURS)}"
            )

    @property
    def kernel(self) -> int:
        return blur_kernel(self.blur_size or self.size, self.flavour)[0]

    @property
    def sigma_range(self) -> tuple[float, float]:
        f = blur_kernel(self.blur_size or self.size)[1]
        return 0.1 * f, 2.0 * f

    def sample_geometric(self, img, p: dict) -> dict:
        i, j, h, w = T.RandomResizedCrop.get_params(img, list(self.scale), list(RATIO))
        _, H, W = F.get_dimensions(img)
        p.update(top=i, left=j, height=h, width=w, img_h=H, img_w=W)
        p["flip"] = float(torch.rand(1) < 0.5)
        return p

    def sample_photometric(self, p: dict) -> dict:
        p["jitter"] = float(not self.jitter_p < torch.rand(1))
        if p["jitter"]:
            b, c, s, h = self.jitter
            order, *factors = T.ColorJitter.get_params(
                [1 - b, 1 + b], [1 - c, 1 + c], [1 - s, 1 + s], [-h, h]
            )
            p.update({f"order{k}": int(o) for k, o in enumerate(order)})
            p.update(zip(("brightness", "contrast", "saturation", "hue"), map(float, factors)))
        p["gray"] = float(torch.rand(1) < self.gray_p)
        p["blur"] = float(not self.blur_p < torch.rand(1))
        if p["blur"]:
            p["sigma"] = T.GaussianBlur.get_params(*self.sigma_range)
        p["solarize"] = float(torch.rand(1).item() < self.solarize_p)
        self._threshold(p)
        return p

    def _threshold(self, p: dict) -> None:
        p["threshold"] = SOLARIZE_AT
        if self.flavour == "kornia" and p["solarize"]:
            p["threshold"] = float(torch.rand(1))

    def sample(self, img) -> torch.Tensor:
        return encode(self.sample_photometric(self.sample_geometric(img, {})))

    def resample_per_image(self, params: torch.Tensor) -> torch.Tensor:
        """Keep crop, jitter and grayscale; draw flip, blur and solarize anew (STL's split)."""
        p = decode(params)
        p["flip"] = float(torch.rand(1) < 0.5)
        p["blur"] = float(not self.blur_p < torch.rand(1))
        p["sigma"] = 0.0
        if p["blur"]:
            p["sigma"] = T.GaussianBlur.get_params(*self.sigma_range)
        p["solarize"] = float(torch.rand(1).item() < self.solarize_p)
        self._threshold(p)
        return encode(p)

    def crop(self, img, params: torch.Tensor):
        """The geometric part only; crop boxes in relative coordinates fit any image size."""
        p = decode(params)
        _, H, W = F.get_dimensions(img)
        sy, sx = H / p["img_h"], W / p["img_w"]
        i, j = round(p["top"] * sy), round(p["left"] * sx)
        h, w = max(1, round(p["height"] * sy)), max(1, round(p["width"] * sx))
        img = F.resized_crop(
            img, i, j, h, w, [self.size, self.size], self.interpolation, antialias=True
        )
        return F.hflip(img) if p["flip"] else img

    def crop_uint8(self, img, params: torch.Tensor) -> torch.Tensor:
        """``crop`` as a uint8 [3, size, size] tensor: what workers hand to ``photometric.render``."""
        return F.pil_to_tensor(self.crop(img, params))

    def photometric(self, img, params: torch.Tensor) -> torch.Tensor:
        if self.flavour == "kornia":
            # Float ops without PIL's rounding: the batched renderer, on this one image.
            # (Imported here: photometric.py builds on this module's layout.)
            from harness.data.photometric import render

            x = F.pil_to_tensor(img)[None]
            return render(x, params[None], self.kernel, flavour="kornia")[0]
        p = decode(params)
        if p["jitter"]:
            ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
            names = ("brightness", "contrast", "saturation", "hue")
            for k in range(4):
                o = int(p[f"order{k}"])
                img = ops[o](img, p[names[o]])
        if p["gray"]:
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        if p["blur"]:
            img = _blur_pil(img, self.kernel, p["sigma"])
        if p["solarize"]:
            img = F.solarize(img, 128)
        return F.normalize(F.to_tensor(img), MEAN, STD)

    def apply(self, img, params: torch.Tensor) -> torch.Tensor:
        return self.photometric(self.crop(img, params), params)

    def torchvision(self) -> T.Compose:
        """The same distribution as plain torchvision transforms (the reference in tests)."""
        k = blur_kernel(self.blur_size or self.size)[0]
        return T.Compose(
            [
                T.RandomResizedCrop(self.size, scale=self.scale, interpolation=self.interpolation),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(*self.jitter)], p=self.jitter_p),
                T.RandomGrayscale(p=self.gray_p),
                T.RandomApply([T.GaussianBlur(k, sigma=self.sigma_range)], p=self.blur_p),
                T.RandomSolarize(128, p=self.solarize_p),
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]
        )


def _blur_pil(img, ksize: int, sigma: float):
    """F.gaussian_blur on a PIL image (uint8 → float → blur → round → uint8), but separable:
    the full k×k convolution was most of the loader's CPU time."""
    x = gaussian_blur(F.pil_to_tensor(img)[None].float(), ksize, torch.tensor([sigma]))
    return F.to_pil_image(x[0].round_().clamp_(0, 255).to(torch.uint8), mode=img.mode)


def encode(p: dict) -> torch.Tensor:
    return torch.tensor([float(p.get(n, _IDENTITY.get(n, 0.0))) for n in PARAMS])


def decode(v: torch.Tensor) -> dict:
    return {n: float(x) for n, x in zip(PARAMS, v.tolist())}


def clean(size: int, interpolation: InterpolationMode = BICUBIC) -> T.Compose:
    """The un-augmented view: Resize(256/224 · size) + CenterCrop(size), as EquiMod's x0."""
    return T.Compose(
        [
            T.Resize(int(math.floor(size * 256 / 224)), interpolation=interpolation),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
