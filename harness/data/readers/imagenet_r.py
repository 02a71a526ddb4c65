"""ImageNet-R: `<root>/<wnid>/*.jpg` over 200 of the 1000 classes (evals.md §1.5).

Labels are indices into the head's full label space, and predictions are restricted to the
classes present: the official evaluation keeps only the 200 masked logit columns, so a model is
never wrong for choosing one of the 800 classes ImageNet-R cannot contain.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.data.readers.base import (
    FIXTURES,
    FolderReader,
    imagenet_r_wnids,
    imagenet_wnids,
    short,
    subdirs,
)


def class_mask(classes, present) -> torch.Tensor:
    """Boolean mask over the head's classes, True for the classes this set contains."""
    present = set(present)
    return torch.tensor([c in present for c in classes], dtype=torch.bool)


def mask_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits with absent classes at -inf: top-k then only ranks present classes, in full-index space."""
    return logits.masked_fill(~mask.to(logits.device), float("-inf"))


class ImageNetR(FolderReader):
    title = "ImageNet-R"
    fix = f"ImageNet-R is <root>/<wnid>/*.jpg with the 200 imagenet-r wnid folders; {FIXTURES}"

    def __init__(self, root, *, classes=None, transform=None):
        super().__init__(root, classes=classes, transform=transform)
        self.present = sorted({self.classes[y] for y in self.targets}, key=self.class_to_idx.get)
        self.mask = class_mask(self.classes, self.present)
        self.indices = self.mask.nonzero().flatten()  # ascending full-space indices of the subset

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return mask_logits(logits, self.mask)

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """Only the subset's columns (for a softmax over the 200, as the calibration metrics take it)."""
        return logits[..., self.indices.to(logits.device)]

    @classmethod
    def scan(cls, root: Path, classes=None):
        inv, classes, samples = super().scan(root, classes)
        present = set(subdirs(root)) if root.is_dir() else set()
        if list(classes) == list(imagenet_wnids()) and present != set(imagenet_r_wnids()):
            missing = sorted(set(imagenet_r_wnids()) - present)
            extra = sorted(present - set(imagenet_r_wnids()))
            inv.problems.append(
                f"{cls.title} folder {root} does not hold exactly the 200 ImageNet-R classes "
                f"(missing: {short(missing) or 'none'}; not ImageNet-R: {short(extra) or 'none'}): "
                "re-extract imagenet-r.tar"
            )
        return inv, classes, samples
