"""View policies: how a list of images becomes a training batch.

Every base method has its two-view SSL augmentation (spec/methods.md), split into a
geometric part (RandomResizedCrop + flip) and a photometric part per view, because SER's
B2 path needs one shared crop with two photometric draws followed by a group element
(spec/ser.md §3–4). Batches are built from a seed derived from (run seed, epoch, step,
rank), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision import transforms as T

from harness import group
from harness.errors import HarnessError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BICUBIC, BILINEAR = T.InterpolationMode.BICUBIC, T.InterpolationMode.BILINEAR

# (crop scale, interpolation, blur p per view, solarize p per view)
SSL_AUGS = {
    "moco_v3": ((0.08, 1.0), BILINEAR, (1.0, 0.1), (0.0, 0.2)),
    # SER's DINO runs use no local crops; DINO then advises global scale (0.14, 1).
    "dino": ((0.14, 1.0), BICUBIC, (1.0, 0.1), (0.0, 0.2)),
    "barlow_twins": ((0.08, 1.0), BICUBIC, (1.0, 0.1), (0.0, 0.2)),
}


def _blur(size: int, p: float):
    # The specs' kernel (23 px) and σ ∈ [0.1, 2] are for 224 px; scale both with the crop.
    k = max(3, int(round(size * 0.1)) // 2 * 2 + 1)
    f = size / 224
    return T.RandomApply([T.GaussianBlur(k, sigma=(0.1 * f, 2.0 * f))], p=p)


@dataclass
class SSLAugmentation:
    name: str
    size: int
    crop_min: float | None = None   # presets below 224 px raise the method's minimum crop scale
    geometric: T.Compose = field(init=False)
    photometric: list = field(init=False)

    def __post_init__(self):
        if self.name not in SSL_AUGS:
            raise HarnessError(f"no SSL augmentation '{self.name}'; known: {', '.join(SSL_AUGS)}")
        scale, interp, blur_p, sol_p = SSL_AUGS[self.name]
        if self.crop_min is not None:
            scale = (max(scale[0], self.crop_min), scale[1])
        self.geometric = T.Compose([T.RandomResizedCrop(self.size, scale=scale, interpolation=interp),
                                    T.RandomHorizontalFlip()])
        self.photometric = [
            T.Compose([
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                _blur(self.size, blur_p[v]),
                T.RandomSolarize(128, p=sol_p[v]),
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]) for v in range(2)
        ]

    def view(self, img, v: int) -> torch.Tensor:
        return self.photometric[v](self.geometric(img))


@dataclass
class ViewPolicy:
    """Two SSL views for B1 images; SER's equivariance pairs for the last B2 (if any)."""

    augmentation: SSLAugmentation
    patch_size: int
    equiv: dict | None = None  # {"ratio", "policy", "scale", "aspect"}

    @property
    def provides(self) -> set[str]:
        return {"two_views"} | ({"equiv_pairs"} if self.equiv else set())

    def n_equiv(self, local_batch: int) -> int:
        if not self.equiv:
            return 0
        n = round(self.equiv["ratio"] * local_batch)
        if n < 2:
            raise HarnessError(
                f"SER's equivariance subset has {n} image(s) per rank (r={self.equiv['ratio']}, "
                f"batch {local_batch}); it needs ≥ 2: raise r with '+ser@r0.1' or the batch size")
        return n

    def __call__(self, images: list, seed: int, elements=None) -> dict:
        """Build one batch. ``elements`` = (g1, g2) for the equivariance subset, if any."""
        aug = self.augmentation
        n2 = len(elements[0]) if elements else 0
        b1 = images[:len(images) - n2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = [[torch.stack([aug.view(im, v) for im in b1])] for v in range(2)]
            if n2:
                bases = [aug.geometric(im) for im in images[len(b1):]]
                for v in range(2):
                    x = torch.stack([aug.photometric[v](im) for im in bases])
                    views[v].append(group.act_each(x, elements[v], unit=self.patch_size))
        batch = {"views": views}
        if n2:
            batch["equiv"] = {"g1": elements[0], "g2": elements[1], "chunk": 1}
        return batch

    def sample_elements(self, gen: torch.Generator, n: int):
        grid = self.augmentation.size // self.patch_size
        sampler = group.POLICIES[self.equiv["policy"]]
        return sampler(gen, n, (grid, grid), self.equiv["scale"], self.equiv["aspect"])


def check_requirements(method_name: str, requires, policy: ViewPolicy) -> None:
    missing = set(requires) - policy.provides
    if missing:
        raise HarnessError(f"method '{method_name}' needs view inputs {sorted(missing)} that the "
                           f"view policy does not provide: add the add-on that supplies them")
