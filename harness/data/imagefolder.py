"""ImageFolder loading with one-line, fixable errors instead of torchvision's tracebacks.

The split's file list comes from its file index (``harness.data.loading.file_index``): walked
once, then read from the cache by every later job while no directory below the split changed.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from harness.data.decode import load_rgb
from harness.data.loading import FileIndex, file_index, subfolders
from harness.errors import HarnessError

_LAYOUT = "an ImageFolder split is <root>/<split>/<class>/<image>"


def _images(index: FileIndex, d: Path) -> int:
    # torchvision walks class folders recursively, so count the same way.
    return sum(f.lower().endswith(IMG_EXTENSIONS) for _, files in index.walk(d) for f in files)


def _check(root, split: str) -> tuple[dict, FileIndex]:
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
    classes = subfolders(top)
    if len(classes) < 2:
        loose = sum(f.name.lower().endswith(IMG_EXTENSIONS) for f in os.scandir(top) if f.is_file())
        raise HarnessError(
            f"{top} has {len(classes)} class folder(s) and {loose} loose image(s): {_LAYOUT}; "
            "move the images into one sub-folder per class (at least 2 classes)"
        )
    index = file_index(top)
    counts = {c: _images(index, top / c) for c in classes}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise HarnessError(
            f"class folder(s) {', '.join(str(top / c) for c in empty)} hold no images "
            f"({'/'.join(IMG_EXTENSIONS)}): add images to them or delete them"
        )
    return {"classes": classes, "counts": counts, "n_images": sum(counts.values())}, index


def check_imagefolder(root, split: str) -> dict:
    """Classes, images per class and in all of ``root/split``; a HarnessError naming the fix
    when the layout is wrong."""
    return _check(root, split)[0]


def _label_classes(root: Path, split: str, classes: list[str]) -> list[str]:
    """The label space of ``split``: its own sorted folders for train/, train/'s for any other
    split beside a train/ (labels are matched by class name, never by position: a val/ with a
    class fewer keeps every other label). A class train/ lacks is refused."""
    train = root / "train"
    if split == "train" or not train.is_dir():
        return classes
    known = subfolders(train)
    extra = [c for c in classes if c not in set(known)]
    if extra:
        raise HarnessError(
            f"{root / split} has class folder(s) {root / 'train'} lacks "
            f"({', '.join(extra[:3])}{', …' if len(extra) > 3 else ''}): labels are matched by "
            f"folder name, so remove them from {split}/ or add them to train/"
        )
    return known


class ImageFolderDataset(ImageFolder):
    """torchvision ImageFolder (RGB PIL images), validated first. Labels index train/'s sorted
    class folders in every split (``_label_classes``).

    Samples are torchvision's (sorted classes, IMG_EXTENSIONS, symlinks followed, a sorted walk
    of each class folder), listed from the split's file index rather than by a second walk."""

    def __init__(self, root, split: str, transform=None):
        self.info, self._index = _check(root, split)
        self._labels = _label_classes(Path(root), split, self.info["classes"])
        try:
            super().__init__(str(Path(root) / split), transform=transform, loader=load_rgb)
        finally:
            del self._index  # the samples hold what is needed; workers need not copy the index

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        labels = getattr(self, "_labels", None)
        if labels is None:
            return super().find_classes(directory)
        return labels, {c: i for i, c in enumerate(labels)}

    def make_dataset(
        self,
        directory,
        class_to_idx: dict[str, int],
        extensions=None,
        is_valid_file=None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        """torchvision's ``make_dataset``, each class folder's walk read from the index."""
        index = getattr(self, "_index", None)
        if index is None or Path(directory) != index.top:  # not the split this index lists
            return super().make_dataset(
                directory, class_to_idx, extensions, is_valid_file, allow_empty
            )
        if not class_to_idx:
            raise ValueError(
                "'class_to_index' must have at least one entry to collect any samples."
            )
        if (extensions is None) == (is_valid_file is None):
            raise ValueError(
                "Both extensions and is_valid_file cannot be None or not None at the same time"
            )
        if extensions is not None:

            def is_valid_file(x: str) -> bool:
                return has_file_allowed_extension(x, extensions)

        instances, available = [], set()
        for target_class in sorted(class_to_idx):
            class_index = class_to_idx[target_class]
            for where, fnames in index.walk(os.path.join(directory, target_class)):
                for fname in fnames:
                    path = os.path.join(where, fname)
                    if is_valid_file(path):
                        instances.append((path, class_index))
                        available.add(target_class)
        # Classes of the label space this split has no folder for (a val/ subset).
        empty = set(class_to_idx) - available - (set(class_to_idx) - set(self.info["classes"]))
        if empty and not allow_empty:
            raise FileNotFoundError(
                f"Found no valid file for the classes {', '.join(sorted(empty))}."
            )
        return instances
