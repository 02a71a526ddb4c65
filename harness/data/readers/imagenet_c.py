"""ImageNet-C: `<root>/<corruption>/<severity>/<wnid>/*.JPEG`, 19 corruptions × severities 1–5 (evals.md §2).

Each (corruption, severity) is one ImageFolder-shaped set. The headline number averages sets, so
`suite` refuses a tree with any set missing rather than averaging the ones that are there.
"""

from __future__ import annotations

from pathlib import Path

from harness.data.readers.base import FolderReader, Inventory, missing_sets, scan_sets, subdirs

# Canonical order and exact directory names (hendrycks/robustness test.py; imagecorruptions' 0–18).
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")  # "validation" set
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)


class ImageNetC(FolderReader):
    """One (corruption, severity) set; `ImageNetC.suite(root)` for all of them, checked complete."""

    title = "ImageNet-C"
    fix = (
        "regenerate the tree (`harness data fixtures --out DIR` for the fixture) or re-download and "
        "extract that part of ImageNet-C (Zenodo record 2235448) so every <corruption>/<1..5>/ exists"
    )

    def __init__(self, root, corruption: str, severity: int, *, classes=None, transform=None):
        super().__init__(
            root, classes=classes, transform=transform, corruption=corruption, severity=severity
        )
        self.corruption, self.severity = corruption, int(severity)

    @classmethod
    def folder(cls, root: Path, corruption: str, severity: int) -> Path:
        return root / corruption / str(severity)

    @classmethod
    def scan(cls, root: Path, classes=None, corruption: str = "", severity: int = 0):
        inv, classes, samples = super().scan(
            root, classes, corruption=corruption, severity=severity
        )
        if corruption not in ALL_CORRUPTIONS or int(severity) not in SEVERITIES:
            inv.problems.insert(
                0,
                f"unknown ImageNet-C set '{corruption}' severity {severity}: corruptions are "
                f"{', '.join(ALL_CORRUPTIONS)}; severities 1-5",
            )
        elif not cls.folder(root, corruption, severity).is_dir():
            inv.problems = missing_sets(
                cls.title, root, [f"severity {severity} of '{corruption}'"], 1, 1, cls.fix
            )
        return inv, classes, samples

    @classmethod
    def inventory(
        cls, root, corruptions=ALL_CORRUPTIONS, severities=SEVERITIES, deep: bool = True
    ) -> Inventory:
        root = Path(root)
        if not root.is_dir():
            return Inventory(
                cls.title, root, {}, [f"{cls.title} root {root} does not exist: {cls.fix}"]
            )
        sets = [{"corruption": c, "severity": s} for c in corruptions for s in severities]
        counts, problems = scan_sets(cls, root, sets, deep)
        found, missing = {}, []
        for c in corruptions:
            have = [s for s in severities if counts[c, s] is not None]
            gone = [s for s in severities if counts[c, s] is None]
            missing += (
                [f"'{c}' (all severities)"]
                if not have
                else [f"severity {s} of '{c}'" for s in gone]
            )
            n = sum(counts[c, s] for s in have) if deep else "not counted"
            found[c] = (
                f"severities {' '.join(map(str, have)) or 'none'}"
                + (f" (missing {' '.join(map(str, gone))})" if gone else "")
                + f"; images {n}"
            )
        stray = [d for d in subdirs(root) if d not in ALL_CORRUPTIONS]
        if stray:
            found["not ImageNet-C folders"] = ", ".join(stray)
        n_missing = sum(v is None for v in counts.values())
        problems = missing_sets(cls.title, root, missing, n_missing, len(sets), cls.fix) + problems
        return Inventory(cls.title, root, found, problems)

    @classmethod
    def suite(
        cls, root, corruptions=CORRUPTIONS, severities=SEVERITIES, *, classes=None, transform=None
    ) -> dict[tuple[str, int], ImageNetC]:
        """Every requested set, or a HarnessError naming the first one missing."""
        cls.inventory(root, corruptions, severities, deep=False).require()
        return {
            (c, s): cls(root, c, s, classes=classes, transform=transform)
            for c in corruptions
            for s in severities
        }
