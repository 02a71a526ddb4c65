"""3DIEBench (facebookresearch/SIE): `<root>/<synset>/<object>/image_<k>.jpg` + `latent_<k>.npy` (evals.md §4).

Splits are per object, in `{train,val}_images.npy` (entries like "/02691156/dc8d…b7/") and
`{train,val}_labels.npy` (index of the synset in the sorted synset list); SIE keeps them in its
repository's data/ folder, not in the image tarball, so they may sit apart from the images.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from harness.data.readers.base import FIXTURES, Inventory, Reader, short

SPLITS = ("train", "val")
N_CLASSES = 55  # the real set; fixtures have fewer
VIEWS = 50  # views per object in the real set
# The 7 values of latent_<k>.npy, in the order the generator saves them.
LATENTS = ("yaw", "pitch", "roll", "floor_hue", "spot_theta", "spot_phi", "light_hue")
MEAN, STD = (0.5016, 0.5037, 0.5060), (0.1030, 0.0999, 0.0969)  # ToTensor + Normalize, no crop
_VIEW = re.compile(r"(image|latent)_(\d+)\.(jpg|npy)$")


def _load(path: Path) -> tuple[np.ndarray | None, str | None]:
    """The plain array at ``path`` (strings or numbers), or None and the problem: an object
    array is a pickle, and is refused rather than unpickled."""
    try:
        return np.load(path, allow_pickle=False), None
    except ValueError as e:
        if "allow_pickle" in str(e):
            return None, (
                f"{path} is an object array, stored as a pickle: refused, as unpickling it "
                f"could run code; re-copy it from facebookresearch/SIE, or have whoever made "
                f"it save the names as a plain string array"
            )
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
    except (OSError, EOFError) as e:
        why = f"{type(e).__name__}: {str(e)[:120]}"
    return None, f"{path} cannot be read as a .npy array ({why}): re-copy it from SIE"


def read_split(splits_dir: Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """[(synset/object, label)] of one split, and problems."""
    names, labels = splits_dir / f"{split}_images.npy", splits_dir / f"{split}_labels.npy"
    gone = [p.name for p in (names, labels) if not p.is_file()]
    if gone:
        return [], [
            f"3DIEBench split file(s) {', '.join(gone)} missing in {splits_dir}: copy data/{split}_images.npy "
            f"and data/{split}_labels.npy from facebookresearch/SIE there (or pass splits_dir); {FIXTURES}"
        ]
    (objs, bad_names), (ys, bad_labels) = _load(names), _load(labels)
    bad = [b for b in (bad_names, bad_labels) if b]
    if bad:
        return [], bad
    objs, ys = [str(x).strip("/") for x in objs], [int(y) for y in ys]
    if len(objs) != len(ys):
        return [], [
            f"{names} has {len(objs)} objects but {labels} has {len(ys)} labels: re-copy both from SIE"
        ]
    return list(zip(objs, ys)), []


def synset_classes(pairs) -> tuple[list[str], list[str]]:
    """classes[label] = synset; the labels must be the synsets' sorted order, one label per synset."""
    by_label = {}
    for obj, y in pairs:
        by_label.setdefault(y, set()).add(obj.split("/")[0])
    synsets = sorted({s for v in by_label.values() for s in v})
    wrong = [y for y, s in by_label.items() if s != {synsets[y] if 0 <= y < len(synsets) else None}]
    if wrong:
        return synsets, [
            f"3DIEBench labels do not follow the sorted synset order (label {wrong[0]} holds "
            f"{short(sorted(by_label[wrong[0]]))}): re-copy the *_labels.npy files from SIE"
        ]
    return synsets, []


class IEBench3D(Reader):
    """Every view of every object in a split; items are (image, label) or (image, label, latent)."""

    title = "3DIEBench"

    def __init__(
        self, root, split: str = "train", *, splits_dir=None, transform=None, with_latent=False
    ):
        super().__init__(root, transform=transform, split=split, splits_dir=splits_dir)
        self.split, self.with_latent = split, with_latent
        # (synset/object, k) per sample: rotation prediction pairs two views of one object.
        self.views = [
            (Path(p).parent.relative_to(self.root).as_posix(), int(_VIEW.search(p).group(2)))
            for p, _ in self.samples
        ]

    @classmethod
    def scan(cls, root: Path, classes=None, split: str = "train", splits_dir=None):
        splits_dir = Path(splits_dir) if splits_dir else root
        if not root.is_dir():
            return (
                Inventory(
                    cls.title,
                    root,
                    {},
                    [
                        f"3DIEBench root {root} does not exist: extract "
                        f"3DIEBench.tar.gz there; {FIXTURES}"
                    ],
                ),
                [],
                [],
            )
        pairs, problems = read_split(splits_dir, split)
        other, _ = read_split(splits_dir, "val" if split == "train" else "train")
        classes, wrong = synset_classes(pairs + other)
        overlap = {o for o, _ in pairs} & {o for o, _ in other}
        if overlap:
            wrong.append(
                f"3DIEBench train and val share {len(overlap)} object(s) (e.g. {min(overlap)}): "
                "re-copy the split files from SIE"
            )
        samples, owners, absent, unpaired = [], [], [], []
        for obj, y in pairs:
            d = root / obj
            try:
                found = [_VIEW.match(n) for n in os.listdir(d)]
            except FileNotFoundError:
                absent.append(obj)
                continue
            kinds = {}
            for m in filter(None, found):
                kinds.setdefault(int(m.group(2)), set()).add(m.group(1))
            unpaired += [f"{obj}/{k}" for k, s in kinds.items() if len(s) != 2]
            for k in sorted(
                k for k, s in kinds.items() if len(s) == 2
            ):  # numeric: image_10 after image_9
                samples.append((str(d / f"image_{k}.jpg"), y))
                owners.append(obj)
        if absent:
            problems.append(
                f"{len(absent)} {split} object folder(s) listed in the split file are missing under "
                f"{root} (e.g. {absent[0]}): extract 3DIEBench.tar.gz completely"
            )
        if unpaired:
            problems.append(
                f"{len(unpaired)} view(s) have an image without its latent or the reverse (e.g. "
                f"{unpaired[0]}): every view k needs image_k.jpg and latent_k.npy"
            )
        n, gone = Counter(owners), set(absent)
        per_obj = [n[o] for o, _ in pairs if o not in gone] or [0]
        found = {
            f"{split} objects": len(pairs),
            f"{split} views": len(samples),
            f"{split} views per object": f"{min(per_obj)}..{max(per_obj)} (real set: {VIEWS})",
            "classes": f"{len(classes)} (real set: {N_CLASSES})",
        }
        return Inventory(cls.title, root, found, problems + wrong), classes, samples

    @classmethod
    def inventory(cls, root, splits_dir=None, **_) -> Inventory:
        root = Path(root)
        invs = [cls.scan(root, None, s, splits_dir)[0] for s in SPLITS]
        found = {k: v for inv in invs for k, v in inv.found.items()}
        problems = list(dict.fromkeys(p for inv in invs for p in inv.problems))  # shared ones once
        return Inventory(cls.title, root, found, problems)

    def latent(self, i: int) -> np.ndarray:
        """The 7 latents of sample i, in LATENTS order."""
        path = Path(self.samples[i][0])
        latent = path.with_name(path.name.replace("image_", "latent_")).with_suffix(".npy")
        return np.load(latent, allow_pickle=False)

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (
            (x, y, torch.as_tensor(self.latent(i), dtype=torch.float32))
            if self.with_latent
            else (x, y)
        )
