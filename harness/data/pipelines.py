"""A base method's augmentation pipelines at one image size: its two global views, the 2+4
local crops, the small rotated crop and the un-augmented input, each a recorded ``Pipeline``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision.transforms import InterpolationMode

from harness.data.augment import BICUBIC, BILINEAR, IDX, Pipeline, clean
from harness.errors import HarnessError


@dataclass(frozen=True)
class SSLAugmentation:
    """A base method's two-view SSL augmentation, its class attribute ``augmentation``: the
    global crops' scale and interpolation, the blur and the solarize probability of view 1 and
    view 2 (the rotated and clean inputs share the interpolation; the local crops have their
    own, ``LOCAL_CROPS``)."""

    scale: tuple[float, float]
    interpolation: InterpolationMode
    blur_p: tuple[float, float]
    solarize_p: tuple[float, float]

    def __str__(self) -> str:
        return f"crops {self.scale}, {self.interpolation.value}"


# The 2+4 local crops (``views.local_crops``), 96 px at 224 with the global views' 9×9 blur
# (σ 0.1–2) at p 0.5, jitter p 0.8, flip, no solarize. "ser": SER's loader/local4.py (torchvision's
# default bilinear, no grayscale); "dino": DINO's main_dino.py (bicubic, grayscale p 0.2).
LOCAL_CROPS = {
    "ser": dict(scale=(0.05, 0.25), interpolation=BILINEAR, gray_p=0.0),
    "dino": dict(scale=(0.05, 0.4), interpolation=BICUBIC, gray_p=0.2),
}
LOCAL_SCALE = LOCAL_CROPS["ser"]["scale"]
ROTATED_SCALE = (0.05, 0.14)  # E-SSL's rotation crop: 96 px, bilinear, blur 0.1


def local_crops_effect(n: int = 1000) -> str:
    """The departure ``multicrop-local-crops``, measured: ``n`` local-crop draws at 224 px under
    each ``views.local_crops``, their mean and largest share of the image and grayscale rate."""
    img, out = torch.empty(3, 224, 224), []
    with torch.random.fork_rng(devices=[]):
        for name in LOCAL_CROPS:
            torch.manual_seed(0)
            ssl = SSLAugmentation((0.08, 1.0), BILINEAR, (1.0, 0.1), (0.0, 0.2))
            pipe = Augmentations(ssl, 224, 16, local_crops=name).local
            p = torch.stack([pipe.sample(img) for _ in range(n)])
            area = p[:, IDX["height"]] * p[:, IDX["width"]] / 224**2
            gray = p[:, IDX["gray"]].mean()
            out.append(
                f"{name}: mean area {area.mean():.1%} (max {area.max():.1%}), gray {gray:.1%}"
            )
    return "; ".join(out) + f" of the image ({n} draws at 224 px)"


def small_size(img_size: int, patch: int) -> int:
    """96 px at 224, as a whole number (≥ 2) of patches at other scales."""
    return max(2, round(img_size * 96 / 224 / patch)) * patch


@dataclass
class Augmentations:
    """The pipelines of one base method's augmentation at one image size."""

    ssl: SSLAugmentation
    size: int
    patch: int
    crop_min: float | None = None  # presets below 224 px raise the minimum global crop
    flavour: str = "kornia"  # the photometric part's (``views.photometric``, augment.FLAVOURS)
    local_crops: str = "ser"  # the 2+4 local crops' (``views.local_crops``, LOCAL_CROPS)
    globals: tuple = field(init=False)
    local: Pipeline = field(init=False)
    rotated: Pipeline = field(init=False)
    clean: object = field(init=False)

    def __post_init__(self):
        scale, interp = self.ssl.scale, self.ssl.interpolation
        blur_p, sol_p, fl = self.ssl.blur_p, self.ssl.solarize_p, self.flavour
        if self.crop_min is not None:
            scale = (max(scale[0], self.crop_min), scale[1])
        self.globals = tuple(
            Pipeline(self.size, scale, interp, blur_p=blur_p[v], solarize_p=sol_p[v], flavour=fl)
            for v in range(2)
        )
        small = small_size(self.size, self.patch)
        if self.local_crops not in LOCAL_CROPS:
            raise HarnessError(
                f"views.local_crops={self.local_crops}: choose one of {', '.join(LOCAL_CROPS)}"
            )
        local = LOCAL_CROPS[self.local_crops]
        self.local = Pipeline(small, blur_p=0.5, flavour=fl, blur_size=self.size, **local)
        self.rotated = Pipeline(small, ROTATED_SCALE, BILINEAR, blur_p=0.1, flavour=fl)
        self.clean = clean(self.size, interp)
