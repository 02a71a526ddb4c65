"""What every evaluation-set reader shares: a scan that lists problems instead of raising, a label
space fixed by the classifier head rather than by whichever folders happen to exist, and a
Dataset of (path, label) samples.

A scan returns an `Inventory`: what was found (printed by `harness data check`) and one-line
problems. Constructors raise the first problem, so an incomplete tree stops an evaluation before
any number is computed from part of it.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from harness.data.decode import load_rgb
from harness.data.loading import FileIndex, file_index, subfolders
from harness.errors import HarnessError

FIXTURES = "`harness data fixtures --out DIR` writes a small tree in this layout"


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in index order (sorted as strings, evals.md §1.1), as timm ships them."""
    return tuple(pkgutil.get_data("timm.data", "_info/imagenet_synsets.txt").decode().split())


@cache
def imagenet_r_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-R classes (sorted wnids; their IN-1k indices are 1, 2, 4, 6, …, 988)."""
    return tuple(pkgutil.get_data("timm.data", "_info/imagenet_r_synsets.txt").decode().split())


def subdirs(d: Path) -> list[str]:
    """Sorted visible sub-folders (as the file index lists them): a generator's `.…-tmp-`
    folder is never a class."""
    return [n for n in subfolders(d) if not n.startswith(".")]


def files_under(d: Path, exts=IMG_EXTENSIONS, index: FileIndex | None = None) -> list[Path]:
    """Files with these extensions below d, in torchvision ImageFolder's order (sorted walk).

    ``index``: a FileIndex of d or of a folder above it, read instead of walking d."""
    if index is not None:
        return [
            Path(top) / n for top, names in index.walk(d) for n in names if n.lower().endswith(exts)
        ]
    # The index's walk checks links (a loop or a link out of d is refused), as os.walk won't.
    return files_under(d, exts, file_index(d))


def label_space(found: list[str], classes, where: Path) -> tuple[list[str], list[str]]:
    """The head's classes and any problem with `found` folders in it.

    Labels index the head's classes, so a subset tree (ImageNet-R, or one ImageNet-P folder
    missing a class) keeps the 1000-way indices. Without `classes`, wnid folders get the
    canonical 1000 and anything else (the synthetic fixtures) its own sorted names.
    """
    if classes is None:
        wnids = imagenet_wnids()
        classes = list(wnids) if found and set(found) <= set(wnids) else sorted(found)
        return classes, []
    classes = list(classes)
    unknown = [f for f in found if f not in set(classes)]
    if unknown:
        return classes, [
            f"{len(unknown)} class folder(s) under {where} (e.g. '{unknown[0]}') are not among "
            f"the head's {len(classes)} classes (e.g. '{classes[0]}'): pass the classes the linear "
            "head was trained on, or remove the stray folders"
        ]
    return classes, []


def scan_class_folders(top: Path, classes, title: str, fix: str, exts=IMG_EXTENSIONS):
    """`top/<class>/**/<file>` → (classes, samples, counts, problems); nothing raised. The files
    come from top's file index (walked once, then cached while nothing below top changes)."""
    if not top.is_dir():
        return list(classes or []), [], {}, [f"{title} folder {top} does not exist: {fix}"]
    found = subdirs(top)
    if len(found) == 1 and len(subdirs(top / found[0])) > 1:
        return (
            list(classes or []),
            [],
            {},
            [
                f"{top} holds a single folder '{found[0]}' whose sub-folders look like the classes: "
                f"point --root at {top / found[0]}"
            ],
        )
    if not found:
        return (
            list(classes or []),
            [],
            {},
            [f"{title} folder {top} has no class sub-folders: {fix}"],
        )
    classes, problems = label_space(found, classes, top)
    label = {c: i for i, c in enumerate(classes)}
    tree = file_index(top)
    samples, counts = [], {}
    for c in found:
        files = files_under(top / c, exts, tree)
        counts[c] = len(files)
        samples += [(str(f), label.get(c, -1)) for f in files]
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        problems.append(
            f"{len(empty)} class folder(s) under {top} (e.g. '{empty[0]}') hold no "
            f"{'/'.join(exts)} files: {fix}"
        )
    return classes, samples, counts, problems


@dataclass
class Inventory:
    """What a scan found (name → printable value) and what is wrong with it, one line each."""

    title: str
    root: Path
    found: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def lines(self, limit: int = 20) -> list[str]:
        """What was found and the first ``limit`` problems (a damaged copy may have thousands)."""
        out = [f"{self.title} at {self.root}"] + [f"  {k}: {v}" for k, v in self.found.items()]
        out += [f"  problem: {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            out.append(f"  … and {len(self.problems) - limit} more problem(s)")
        return out

    def require(self) -> Inventory:
        if self.problems:
            more = len(self.problems) - 1
            tail = f" ({more} more problem(s): `harness data check` lists them)" if more else ""
            raise HarnessError(self.problems[0] + tail)
        return self


def short(names, n: int = 6) -> str:
    names = list(names)
    return ", ".join(map(str, names[:n])) + (f", … ({len(names)} in all)" if len(names) > n else "")


class Reader(Dataset):
    """(path, label) samples over `classes`, the head's label space; items are (image, label).

    Subclasses implement `scan(root, classes, **where) -> (Inventory, classes, samples)` for
    what one Dataset reads, and may widen `inventory` to a whole suite (ImageNet-C, -P).
    """

    title = "dataset"
    media = "image"  # what `harness data check` decodes under the root: "image" or "video"

    def __init__(self, root, *, classes=None, transform=None, **where):
        self.root = Path(root)
        self.transform = transform
        inv, self.classes, self.samples = self.scan(self.root, classes, **where)
        self.info = inv.require().found
        self.targets = [y for _, y in self.samples]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def scan(cls, root: Path, classes=None, **where):
        raise NotImplementedError

    @classmethod
    def inventory(cls, root, **where) -> Inventory:
        return cls.scan(Path(root), **where)[0]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, path: str):
        return load_rgb(path)  # sketches are greyscale, some PNGs 16-bit: every head wants RGB

    def __getitem__(self, i):
        path, label = self.samples[i]
        x = self.load(path)
        return (self.transform(x) if self.transform else x), label


class FolderReader(Reader):
    """An ImageFolder-shaped tree at `folder(root, **where)`: `<class>/<file>`."""

    fix = FIXTURES
    exts = IMG_EXTENSIONS

    @classmethod
    def folder(cls, root: Path, **where) -> Path:
        return root

    @classmethod
    def scan(cls, root: Path, classes=None, **where):
        top = cls.folder(root, **where)
        classes, samples, counts, problems = scan_class_folders(
            top, classes, cls.title, cls.fix, cls.exts
        )
        found = {
            "class folders": f"{len(counts)} ({short(counts)})",
            "label space": f"{len(classes)} classes",
            "images": len(samples),
        }
        return Inventory(cls.title, top, found, problems), classes, samples


def scan_sets(reader: type[FolderReader], root: Path, sets: list[dict], deep: bool):
    """Files per set of a suite (None: folder absent) and the problems inside the sets present.

    Shallow only checks that each set has class folders (what an evaluation needs before it
    starts); deep also walks every file, for `harness data check`.
    """
    counts, problems = {}, []
    for where in sets:
        top = reader.folder(root, **where)
        key = tuple(where.values())
        if not top.is_dir():
            counts[key] = None
        elif deep:
            inv, _, samples = reader.scan(root, None, **where)
            counts[key] = len(samples)
            problems += inv.problems
        else:
            counts[key] = -1 if subdirs(top) else 0
            if not counts[key]:
                problems.append(f"{top} has no class folders: {reader.fix}")
    return counts, problems


def missing_sets(
    title: str, root: Path, names: list[str], n_missing: int, total: int, fix: str
) -> list[str]:
    """The one-line refusal for an incomplete suite: an average over fewer sets is a different number."""
    if not names:
        return []
    if len(names) == 1:
        return [f"{title}: missing {names[0]} under {root}: {fix}"]
    return [
        f"{title}: missing {n_missing} of the {total} sets under {root} ({short(names)}): {fix}"
    ]
