"""The evaluation transforms: resize + centre crop for features, random crop + flip for the
augmented linear probe (spec/evals.md §7.1)."""

from __future__ import annotations

from torchvision import transforms as T

from harness.data.augment import BICUBIC, MEAN, STD


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
