"""ImageNet-V2: `<root>/<class index>/<k>.jpeg`, where the folder NAME is the IN-1k index (evals.md §1.3).

ImageFolder would sort "0", "1", "10", "100", … as strings and hand out 0, 1, 2, 3, …: every
label past 1 wrong. Here the label is int(folder name), as in the official loader.
"""

from __future__ import annotations

from pathlib import Path

from harness.data.loading import file_index
from harness.data.readers.base import (
    FIXTURES,
    Inventory,
    Reader,
    files_under,
    imagenet_wnids,
    short,
    subdirs,
)


class ImageNetV2(Reader):
    title = "ImageNet-V2"
    fix = (
        "ImageNet-V2 is <root>/<0..999>/<k>.jpeg (point --root at "
        f"imagenetv2-matched-frequency-format-val/); {FIXTURES}"
    )

    @classmethod
    def scan(cls, root: Path, classes=None):
        classes = list(imagenet_wnids() if classes is None else classes)
        if not root.is_dir():
            return (
                Inventory(
                    cls.title, root, {}, [f"{cls.title} folder {root} does not exist: {cls.fix}"]
                ),
                classes,
                [],
            )
        found = subdirs(root)
        bad = [f for f in found if not f.isdigit()]
        problems = []
        if bad or not found:
            what = (
                f"'{bad[0]}' is not an integer class index" if bad else "there are no class folders"
            )
            problems.append(f"{cls.title} folder {root}: {what}: {cls.fix}")
        by_label = {int(f): f for f in found if f.isdigit()}
        labels = sorted(by_label)
        out = [x for x in labels if x >= len(classes)]
        if out:
            problems.append(
                f"{cls.title} folder {root} has class index {out[0]} but the head has "
                f"{len(classes)} classes: pass the classes the head was trained on"
            )
        samples, empty = [], []
        tree = file_index(root)
        for y in labels:
            files = files_under(root / by_label[y], index=tree)
            empty += [] if files else [y]
            samples += [(str(p), y) for p in files]
        if empty:
            problems.append(
                f"{cls.title} class folder(s) {short(empty)} under {root} hold no images: {cls.fix}"
            )
        info = {
            "class folders": len(labels),
            "labels": f"{labels[0]}..{labels[-1]}" if labels else "none",
            "label space": f"{len(classes)} classes",
            "images": len(samples),
        }
        return Inventory(cls.title, root, info, problems), classes, samples
