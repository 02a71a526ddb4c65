"""ImageFolder loading with one-line, fixable errors instead of torchvision's tracebacks."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from harness.errors import HarnessError

_LAYOUT = "an ImageFolder split is <root>/<split>/<class>/<image>"


def _images(d: Path) -> int:
    # torchvision walks class folders recursively, so count the same way.
    return sum(
        f.lower().endswith(IMG_EXTENSIONS)
        for _, _, files in os.walk(d, followlinks=True)
        for f in files
    )


def check_imagefolder(root, split: str) -> dict:
    root = Path(root)
    top = root / split
    if not root.is_dir():
        raise HarnessError(
            f"dataset root {root} does not exist: generate the synthetic set with "
            f"`harness data synth --root {root}` or point --data-root at an ImageFolder tree "
            "with train/ and val/"
        )
    if not top.is_dir():
        raise HarnessError(
            f"dataset split {top} does not exist: {_LAYOUT}; add {split}/ under {root} "
            "or point --data-root at a tree that has it"
        )
    classes = sorted(e.name for e in os.scandir(top) if e.is_dir())
    if len(classes) < 2:
        loose = sum(f.name.lower().endswith(IMG_EXTENSIONS) for f in os.scandir(top) if f.is_file())
        raise HarnessError(
            f"{top} has {len(classes)} class folder(s) and {loose} loose image(s): {_LAYOUT}; "
            "move the images into one sub-folder per class (at least 2 classes)"
        )
    counts = {c: _images(top / c) for c in classes}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise HarnessError(
            f"class folder(s) {', '.join(str(top / c) for c in empty)} hold no images "
            f"({'/'.join(IMG_EXTENSIONS)}): add images to them or delete them"
        )
    return {"classes": classes, "counts": counts, "n_images": sum(counts.values())}


class ImageFolderDataset(ImageFolder):
    """torchvision ImageFolder (RGB PIL images, labels in sorted folder order), validated first."""

    def __init__(self, root, split: str, transform=None):
        self.info = check_imagefolder(root, split)
        super().__init__(str(Path(root) / split), transform=transform)
