"""The add-ons' own data pipelines, as the public SER code configures them (``views.addon_data``).

SER trains +AugSelf, +STL and +EquiMod with each add-on's own loader, not with the base
method's two views (aitrics-chris/SER; ``main`` at dbe5e93 for STL and EquiMod, branch
``augself`` at 0bcab6c for AugSelf, which ``main`` refuses: "Use augself branch instead"):

* AugSelf (``loader/augself.py`` + ``builder/utils.py`` ``load_equiv_aug_augself``, kornia
  0.4.1): RandomResizedCrop(crop_min 0.08, bilinear) on the workers; then on the GPU, per view
  chunk, flip, ColorJitter_augself(0.4, 0.4, 0.4, 0.1, p 0.8) — brightness and contrast as
  torchvision's (a blend with black / the mean grey, clamped), saturation in HSV (kornia),
  hue handed to ``kornia.enhance.adjust_hue`` in radians without kornia's 2π (a shift of f/2π
  of a turn), one order per chunk —, grayscale p 0.2, a 23×23 reflect-padded blur σ∈[0.1, 2]
  p 0.5 on both views, no solarize; rendered in float. Its colour targets are normalised by
  these ranges (saturation 0.8 wide, not the base methods' 0.4).
* STL (``loader/stl.py`` + ``builder/moco.py`` ``train_stl``): the image squashed to 224²
  (Resize((224, 224)), bilinear); per view, images 2i and 2i+1 share one kornia
  RandomResizedCrop (scale 0.2–1, a slice resized bilinearly with align_corners=True),
  ColorJiggle(0.4, 0.4, 0.2, 0.1, p 0.8) and RandomGrayscale(0.2) draw (one jitter order per
  view); then per image a flip and a 9×9 blur σ∈[0.1, 2] p 0.5; no solarize.
* EquiMod (``loader/equimod.py``): torchvision on the workers, per image: crop (crop_min,
  bilinear) + flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 with a per-image order, grayscale
  0.2, a 9×9 blur p 1.0 / 0.1 and solarize at 128 p 0 / 0.2 (view 1 / view 2); the clean
  image Resize(256) + CenterCrop(224), bilinear; the 18-d parameter vectors standardised
  with the fixed constants ``p_mean`` / ``p_std`` of ``get_dataset_equimod``.

``views.addon_data=base`` gives the harness's earlier behaviour: the base method's views
(``views.photometric``) with the add-on's view policy, EquiMod's statistics fitted on the
run's own augmentation (``ViewPolicy.fit_stats``). Blur kernels scale with the crop size as
the base pipelines' do (``augment.blur_kernel``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torchvision.transforms import functional as F

from harness.data import photometric
from harness.data.augment import BILINEAR, FLAVOURS, IDX, PARAMS, Pipeline, clean, decode
from harness.errors import HarnessError

ADDON_DATA = ("ser", "base")  # views.addon_data: the add-on's own loader, or the base's views
AUGSELF_FLAVOUR = "augself"  # its jitter ops: photometric._JITTER["augself"]
# SER's AugSelf jitter strengths (brightness, contrast, saturation, hue).
AUGSELF_JITTER = (0.4, 0.4, 0.4, 0.1)


@dataclass(frozen=True)
class AddonPipeline(Pipeline):
    """``augment.Pipeline`` with what the add-ons' loaders add: a blur kernel of their own
    (``ksize`` at 224 px), the ``augself`` flavour, and STL's squash (``squash``: the image
    resized to size² first, crops drawn on and sliced from it, then resized with
    align_corners=True, as kornia's RandomResizedCrop in its default slice mode)."""

    ksize: int | None = None
    squash: bool = False

    def __post_init__(self):
        if self.flavour not in (*FLAVOURS, AUGSELF_FLAVOUR):
            raise HarnessError(f"unknown photometric flavour '{self.flavour}'")

    @property
    def kernel(self) -> int:
        if self.ksize is None:
            return super().kernel
        return max(3, int(round(self.size * self.ksize / 224)) // 2 * 2 + 1)

    def sample_geometric(self, img, p: dict) -> dict:
        if self.squash:  # boxes on the squashed image: img_h = img_w = size
            img = torch.empty(3, self.size, self.size)
        return super().sample_geometric(img, p)

    def crop_uint8(self, img, params: torch.Tensor) -> torch.Tensor:
        if not self.squash:
            return super().crop_uint8(img, params)
        p, s = decode(params), self.size
        x = F.pil_to_tensor(F.resize(img, [s, s], self.interpolation, antialias=True))
        i, j, h, w = (int(p[k]) for k in ("top", "left", "height", "width"))
        y = x[None, :, i : i + h, j : j + w].float()
        y = nnf.interpolate(y, size=(s, s), mode="bilinear", align_corners=True)[0]
        y = y.round_().clamp_(0, 255).to(torch.uint8)
        return F.hflip(y) if p["flip"] else y

    def crop(self, img, params: torch.Tensor):
        if not self.squash:
            return super().crop(img, params)
        return F.to_pil_image(self.crop_uint8(img, params))

    def photometric(self, img, params: torch.Tensor) -> torch.Tensor:
        if self.flavour != AUGSELF_FLAVOUR:
            return super().photometric(img, params)
        x = F.pil_to_tensor(img)[None]  # float ops, no PIL rounding: as SER's GPU pipeline
        return photometric.render(x, params[None], self.kernel, flavour=AUGSELF_FLAVOUR)[0]


# EquiMod's 18-d vector (augment.PARAMS without the image size and kornia's threshold, as
# methods/equimod.py's VECTOR) and SER's fixed standardisation constants for it.
EQUIMOD_VECTOR = tuple(n for n in PARAMS if n not in ("img_h", "img_w", "threshold"))
EQUIMOD_MEAN = (
    *(6.8162e01, 9.9199e01, 2.6933e02, 2.7457e02, 4.9905e-01, 8.0054e-01),
    *(1.1998e00, 1.3994e00, 1.6014e00, 1.7995e00, 1.0001e00, 1.0000e00),
    *(1.0005e00, 1.5640e-04, 2.0018e-01, 2.7256e-01, 5.2507e-01, 5.0149e-2),
)
EQUIMOD_STD = (
    *(7.7370e01, 9.8681e01, 1.3686e02, 1.4349e02, 5.0000e-01, 3.9959e-01),
    *(1.1661e00, 1.0201e00, 1.0201e00, 1.1657e00, 4.1347e-01, 4.1323e-01),
    *(4.1349e-01, 1.0333e-01, 4.0013e-01, 3.0381e-01, 6.5251e-01, 6.4719e-2),
)


def equimod_stats() -> tuple[torch.Tensor, torch.Tensor]:
    """SER's constants in augment.PARAMS' layout (mean 0, std 1 where EquiMod reads nothing)."""
    mean, std = torch.zeros(len(PARAMS)), torch.ones(len(PARAMS))
    idx = [PARAMS.index(n) for n in EQUIMOD_VECTOR]
    mean[idx], std[idx] = torch.tensor(EQUIMOD_MEAN), torch.tensor(EQUIMOD_STD)
    return mean, std


@dataclass(frozen=True)
class AddonData:
    """One add-on's data pipeline: per view, the ``AddonPipeline`` settings (the run's crop
    size fills in ``size``; ``views.crop_min`` raises the minimum scale as for the base's)."""

    addon: str
    source: str
    views: tuple[dict, dict]
    clean_bilinear: bool = False  # EquiMod's x0: Resize + CenterCrop, bilinear
    fixed_stats: bool = False  # EquiMod: SER's constants instead of fitted statistics

    def pipelines(self, size: int, crop_min: float | None) -> tuple[AddonPipeline, ...]:
        out = []
        for v in self.views:
            lo, hi = v["scale"]
            scale = (lo if crop_min is None else max(lo, crop_min), hi)
            out.append(AddonPipeline(size, **{**v, "scale": scale}))
        return tuple(out)


_AUGSELF = dict(
    scale=(0.08, 1.0),
    interpolation=BILINEAR,
    blur_p=0.5,
    jitter=AUGSELF_JITTER,
    flavour=AUGSELF_FLAVOUR,
    ksize=23,
)
_STL = dict(scale=(0.2, 1.0), interpolation=BILINEAR, blur_p=0.5, flavour="kornia", squash=True)
_EQUIMOD = dict(scale=(0.08, 1.0), interpolation=BILINEAR, flavour="torchvision", ksize=9)

SER_DATA: dict[str, AddonData] = {
    "augself": AddonData(
        "augself",
        "SER@augself 0bcab6c loader/augself.py, builder/utils.py load_equiv_aug_augself",
        (_AUGSELF, _AUGSELF),
    ),
    "stl": AddonData("stl", "SER@dbe5e93 loader/stl.py, builder/moco.py train_stl", (_STL, _STL)),
    "equimod": AddonData(
        "equimod",
        "SER@dbe5e93 loader/equimod.py",
        (
            {**_EQUIMOD, "blur_p": 1.0, "solarize_p": 0.0},
            {**_EQUIMOD, "blur_p": 0.1, "solarize_p": 0.2},
        ),
        clean_bilinear=True,
        fixed_stats=True,
    ),
}


def addon_data_for(addons, mode: str = "ser") -> AddonData | None:
    """The add-on pipeline a method's views follow: None for ``base`` or without such an
    add-on; two add-ons with pipelines of their own have no public combination."""
    if mode not in ADDON_DATA:
        raise HarnessError(f"views.addon_data={mode}: choose one of {', '.join(ADDON_DATA)}")
    if mode == "base":
        return None
    found = [SER_DATA[n] for n in addons if n in SER_DATA]
    if len(found) > 1:
        names = " and ".join(f"+{d.addon}" for d in found)
        raise HarnessError(
            f"{names} each train on their own data pipeline in the public SER code and it "
            f"combines none of them: set views.addon_data=base for the base method's views"
        )
    return found[0] if found else None


def configure(augs, addons, mode: str = "ser"):
    """Swap ``augs``' global pipelines (and EquiMod's clean view) for the add-on's own;
    returns the fixed parameter statistics to standardise with, or None."""
    data = addon_data_for(addons, mode)
    if data is None:
        return None
    augs.globals = data.pipelines(augs.size, augs.crop_min)
    if data.clean_bilinear:
        augs.clean = clean(augs.size, BILINEAR)
    return equimod_stats() if data.fixed_stats else None


def _share(draws: list, key: str, views=(0, 1)) -> str:
    return "/".join(f"{draws[v][:, IDX[key]].mean():.2f}" for v in views)


def _mean_area(draws: list) -> str:
    d = torch.cat(draws)
    h, w = d[:, IDX["height"]] / d[:, IDX["img_h"]], d[:, IDX["width"]] / d[:, IDX["img_w"]]
    return f"{(h * w).mean():.2f}"


def addon_data_effect(n: int = 200) -> str:
    """The ``addon-data`` departure's size, measured on ``n`` parameter draws per view for
    one 375×500 image at 224 px (moco_v3's views as the base, in brackets): the shares of
    blurred and solarized views, STL's mean crop area (of the squashed image), and for EquiMod
    the mean |Δz| between the vectors standardised with SER's constants and with statistics
    fitted on the same draws."""
    from harness.data.pipelines import Augmentations, SSLAugmentation

    # MoCo-v3's two views (methods/moco_v3.py; data does not import methods): blur 1.0 / 0.1,
    # solarize 0.0 / 0.2.
    base_views = SSLAugmentation((0.08, 1.0), BILINEAR, (1.0, 0.1), (0.0, 0.2))

    img, parts = torch.empty(3, 375, 500), []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name in SER_DATA:
            draws = {}
            for mode in ADDON_DATA:
                augs = Augmentations(base_views, 224, 16)
                configure(augs, [name], mode)
                draws[mode] = [torch.stack([p.sample(img) for _ in range(n)]) for p in augs.globals]

            ser, base = draws["ser"], draws["base"]
            line = (
                f"{name} blurred {_share(ser, 'blur')} ({_share(base, 'blur')}), solarized "
                f"{_share(ser, 'solarize', (1,))} ({_share(base, 'solarize', (1,))})"
            )
            if name == "stl":
                line += f", crop area {_mean_area(ser)} ({_mean_area(base)})"
            if name == "equimod":
                d = torch.cat(ser)
                idx = [PARAMS.index(k) for k in EQUIMOD_VECTOR]
                mean, std = equimod_stats()
                fixed = (d - mean) / std
                fitted = (d - d.mean(0)) / d.std(0).clamp_min(1e-6)
                line += f", |Δz| fixed vs fitted {(fixed - fitted)[:, idx].abs().mean():.2f}"
            parts.append(line)
    return f"ser (base) in {n} draws, view 1/view 2: " + "; ".join(parts)
