"""The evaluation transforms: resize + centre crop for features, random crop + flip for the
augmented linear probe (spec/evals.md §7.1); the stored-size inputs of ImageNet-C/-P
(hendrycks/robustness) and 3DIEBench (facebookresearch/SIE), which never resize."""

from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import functional as F

from harness.data.augment import BICUBIC, MEAN, STD
from harness.errors import HarnessError

ROBUSTNESS_PREPROCESS = ("official", "resize")


def eval_transform(img_size: int, resize: int) -> T.Compose:
    return T.Compose(
        [
            T.Resize(resize, interpolation=BICUBIC),
            T.CenterCrop(img_size),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def train_transform(img_size: int) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(img_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def refuse_smaller(width: int, height: int, size: int, what: str) -> None:
    """One-line HarnessError when a stored ``width``×``height`` image cannot give a
    ``size``² centre crop without padding (torchvision's CenterCrop would pad with zeros)."""
    if min(width, height) < size:
        raise HarnessError(
            f"{what} is stored at {width}×{height} px, smaller than the model's {size}×{size} "
            f"input: robustness.preprocess=official centre-crops stored images and never pads "
            f"or resizes them; pass robustness.preprocess=resize to resize first, or use images "
            f"stored at {size} px or more"
        )


class StoredCrop:
    """Centre crop of a PIL image, at its stored scale, to ``size``² (a no-op when stored at
    that size); refuses an image smaller than ``size`` rather than pad it."""

    def __init__(self, size: int, what: str = "an image"):
        self.size, self.what = int(size), what

    def __call__(self, img):
        refuse_smaller(*img.size, self.size, self.what)
        return F.center_crop(img, self.size)

    def __repr__(self) -> str:
        return f"StoredCrop({self.size})"


def stored_transform(img_size: int, what: str = "an image") -> T.Compose:
    """hendrycks/robustness@8190fe3 ``ImageNet-C/test.py``: CenterCrop(224) → ToTensor →
    Normalize(ImageNet mean/std), no resize; ``ImageNet-P/test.py`` with
    ``utils/video_loader.py``: ToTensor → Normalize per decoded frame, no resize or crop.
    Both sets are stored at 224², so the crop to the model's ``img_size`` is a no-op there;
    fixture trees stored larger are centre-cropped to it, smaller ones refused."""
    return T.Compose([StoredCrop(img_size, what), T.ToTensor(), T.Normalize(MEAN, STD)])


def robustness_transform(
    preprocess: str, img_size: int, resize: int, what: str = "an image"
) -> T.Compose:
    """ImageNet-C/-P input by ``robustness.preprocess``: "official" the stored images
    (``stored_transform``), "resize" the linear probe's val transform (Resize ``resize``,
    bicubic, then CenterCrop ``img_size``)."""
    if preprocess == "official":
        return stored_transform(img_size, what)
    if preprocess == "resize":
        return eval_transform(img_size, resize)
    raise HarnessError(
        f"robustness.preprocess={preprocess!r}: choose one of {', '.join(ROBUSTNESS_PREPROCESS)}"
    )


def robustness_input(cfg: dict, what: str) -> T.Compose:
    """``robustness_transform`` as a job's ``cfg`` sets it (``robustness.preprocess``)."""
    return robustness_transform(
        cfg["robustness"]["preprocess"], cfg["model"]["img_size"], cfg["linear"]["resize"], what
    )


class PatchCrop:
    """Centre crop of a PIL image to the largest multiple of ``patch`` on each side: the ViT
    cuts whole patches only. A no-op on 3DIEBench's 256² images at patch 16 (or 8, 4); it
    trims fixture trees stored at other sizes (36 px at patch 8 → 32)."""

    def __init__(self, patch: int, what: str = "an image"):
        self.patch, self.what = int(patch), what

    def __call__(self, img):
        w, h = img.size
        cw, ch = w - w % self.patch, h - h % self.patch
        if min(cw, ch) == 0:
            raise HarnessError(
                f"{self.what} is stored at {w}×{h} px, smaller than one {self.patch}-px patch: "
                f"use iebench.input=imagenet (resize and crop to model.img_size) or larger images"
            )
        return img if (cw, ch) == (w, h) else F.center_crop(img, [ch, cw])

    def __repr__(self) -> str:
        return f"PatchCrop({self.patch})"


def native_transform(patch: int, mean, std, what: str = "an image") -> T.Compose:
    """facebookresearch/SIE@54541cf ``eval_classification.py`` / ``eval_angle_prediction.py``:
    ToTensor → Normalize(mean, std) of the stored image, no crop, no resize (the ViT
    interpolates its positional embedding to the image's grid); cropped only to whole
    patches (``PatchCrop``)."""
    return T.Compose([PatchCrop(patch, what), T.ToTensor(), T.Normalize(mean, std)])
