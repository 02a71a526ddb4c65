"""ImageNet-P: `<root>/<perturbation>/<wnid>/*.mp4`, one video = one perturbation sequence (evals.md §3).

Videos are decoded with OpenCV frame by frame and BGR→RGB, as the official loader does (other
decoders may round YUV→RGB differently). An item is (frames, label): a T×C×H×W tensor when the
transform makes tensors, else a list of PIL images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data.readers.base import FolderReader, Inventory, missing_sets, scan_sets, subdirs
from harness.errors import HarnessError

# The official evaluator's 14 choices, in its order; the leaderboard's 10 are BENCHMARK_PERTURBATIONS,
# the other 4 are validation sequences.
PERTURBATIONS = (
    "gaussian_noise",
    "shot_noise",
    "motion_blur",
    "zoom_blur",
    "spatter",
    "brightness",
    "translate",
    "rotate",
    "tilt",
    "scale",
    "speckle_noise",
    "gaussian_blur",
    "snow",
    "shear",
)
BENCHMARK_PERTURBATIONS = (
    "gaussian_noise",
    "shot_noise",
    "motion_blur",
    "zoom_blur",
    "snow",
    "brightness",
    "translate",
    "rotate",
    "tilt",
    "scale",
)
FRAMES = {
    p: 41 if p == "translate" else 31 for p in PERTURBATIONS
}  # released set (make_imagenet_p.py)


def is_noise(perturbation: str) -> bool:
    """Noise sequences compare every frame with the first; the others compare neighbours."""
    return "noise" in perturbation


def decode(path) -> list[np.ndarray]:
    """Every frame of an MP4 as H×W×3 RGB uint8."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise HarnessError(
            f"no frame could be decoded from {path}: the file is damaged or not an MP4 video; "
            "re-extract ImageNet-P or regenerate the fixture"
        )
    return frames


class ImageNetP(FolderReader):
    """One perturbation's videos; `ImageNetP.suite(root)` for all 14, checked complete."""

    title = "ImageNet-P"
    exts = (".mp4",)
    media = "video"
    fix = (
        "regenerate the tree (`harness data fixtures --out DIR` for the fixture) or re-download and "
        "extract ImageNet-P (Zenodo record 3565846) so every <perturbation>/<wnid>/*.mp4 exists"
    )

    def __init__(
        self, root, perturbation: str, *, difficulty: int = 1, classes=None, transform=None
    ):
        super().__init__(
            root,
            classes=classes,
            transform=transform,
            perturbation=perturbation,
            difficulty=difficulty,
        )
        self.perturbation, self.difficulty = perturbation, difficulty

    @classmethod
    def folder(cls, root: Path, perturbation: str, difficulty: int = 1) -> Path:
        # Harder noise sequences are separate folders; for the rest difficulty is a frame stride.
        return root / (
            f"{perturbation}_{difficulty}"
            if difficulty > 1 and is_noise(perturbation)
            else perturbation
        )

    @classmethod
    def scan(cls, root: Path, classes=None, perturbation: str = "", difficulty: int = 1):
        inv, classes, samples = super().scan(
            root, classes, perturbation=perturbation, difficulty=difficulty
        )
        if perturbation not in PERTURBATIONS or difficulty not in (1, 2, 3):
            inv.problems.insert(
                0,
                f"unknown ImageNet-P set '{perturbation}' difficulty {difficulty}: "
                f"perturbations are {', '.join(PERTURBATIONS)}; difficulty 1-3",
            )
        elif not cls.folder(root, perturbation, difficulty).is_dir():
            name = cls.folder(root, perturbation, difficulty).name
            inv.problems = missing_sets(cls.title, root, [f"perturbation '{name}'"], 1, 1, cls.fix)
        return inv, classes, samples

    def load(self, path: str):
        return [Image.fromarray(f) for f in decode(path)]

    def __getitem__(self, i):
        path, label = self.samples[i]
        frames = self.load(path)
        if self.transform:
            frames = [self.transform(f) for f in frames]
            if isinstance(frames[0], torch.Tensor):
                frames = torch.stack(frames)
        return frames, label

    @classmethod
    def inventory(
        cls, root, perturbations=PERTURBATIONS, difficulty: int = 1, deep: bool = True
    ) -> Inventory:
        root = Path(root)
        if not root.is_dir():
            return Inventory(
                cls.title, root, {}, [f"{cls.title} root {root} does not exist: {cls.fix}"]
            )
        sets = [{"perturbation": p, "difficulty": difficulty} for p in perturbations]
        counts, problems = scan_sets(cls, root, sets, deep)
        found, missing = {}, []
        for p in perturbations:
            n = counts[p, difficulty]
            top = cls.folder(root, p, difficulty)
            if n is None:
                missing.append(f"perturbation '{top.name}'")
                found[p] = "MISSING"
            elif deep and n:
                first = next(iter(sorted(top.rglob("*.mp4"))))
                found[p] = f"{n} videos; {len(decode(first))} frames in {first.relative_to(root)}"
            else:
                found[p] = "present"
        known = {cls.folder(root, p, d).name for p in PERTURBATIONS for d in (1, 2, 3)}
        stray = [d for d in subdirs(root) if d not in known]
        if stray:
            found["not ImageNet-P folders"] = ", ".join(stray)
        problems = (
            missing_sets(cls.title, root, missing, len(missing), len(sets), cls.fix) + problems
        )
        return Inventory(cls.title, root, found, problems)

    @classmethod
    def suite(
        cls, root, perturbations=PERTURBATIONS, *, difficulty: int = 1, classes=None, transform=None
    ) -> dict[str, ImageNetP]:
        """Every requested perturbation, or a HarnessError naming the first one missing."""
        cls.inventory(root, perturbations, difficulty, deep=False).require()
        return {
            p: cls(root, p, difficulty=difficulty, classes=classes, transform=transform)
            for p in perturbations
        }
