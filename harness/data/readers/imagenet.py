"""ImageNet-1k train/val and ImageNet-Sketch: wnid folders, indices in sorted-wnid order (evals.md §1.1–1.4)."""

from __future__ import annotations

from pathlib import Path

from harness.data.readers.base import FIXTURES, FolderReader, Inventory, subdirs

SPLITS = ("train", "val")


class ImageNet(FolderReader):
    """`<root>/<split>/<wnid>/*.JPEG`; val must be the "valprep" layout, not the flat 50 000 files."""

    title = "ImageNet-1k"
    fix = (
        "an ImageNet root holds train/<wnid>/ and val/<wnid>/ (val reorganised into class folders, "
        f"e.g. with valprep.sh); {FIXTURES}"
    )

    def __init__(self, root, split: str = "train", *, classes=None, transform=None):
        super().__init__(root, classes=classes, transform=transform, split=split)

    @classmethod
    def folder(cls, root: Path, split: str = "train") -> Path:
        return root / split

    @classmethod
    def scan(cls, root: Path, classes=None, split: str = "train"):
        top = cls.folder(root, split)
        if classes is None and top.is_dir():
            classes = subdirs(top)  # ImageFolder's own convention: this split's sorted folders
        return super().scan(root, classes, split=split)

    @classmethod
    def inventory(cls, root, **_) -> Inventory:
        root = Path(root)
        train, classes, _ = cls.scan(root, None, "train")
        val = cls.scan(root, classes or None, "val")[0]
        found = {
            f"{s} {k}": v for s, inv in zip(SPLITS, (train, val)) for k, v in inv.found.items()
        }
        return Inventory(cls.title, root, found, train.problems + val.problems)


class ImageNetSketch(FolderReader):
    """`<root>/<wnid>/sketch_<n>.JPEG`: greyscale sketches, loaded as RGB like ImageFolder does."""

    title = "ImageNet-Sketch"
    fix = (
        "ImageNet-Sketch is <root>/<wnid>/sketch_<n>.JPEG (point --root at the folder holding the "
        f"1000 wnid folders, often sketch/ inside the zip); {FIXTURES}"
    )
