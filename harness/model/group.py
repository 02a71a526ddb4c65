"""The group acting on images and token grids: D4 (90° rotations, flips) × anisotropic rescale.

An element is a morphism between grid sizes: ``g = d ∘ resize`` — first resize the input
(token grid ``src``) to ``d⁻¹(dst)``, then apply the dihedral element ``d``. Any product of
rotations, flips and rescales has this form because D4 maps axis-aligned rescales to
axis-aligned rescales, so ``compose`` and ``inverse`` are closed-form and the feature action
ρ_g is a homomorphism by construction. Sizes are in tokens; images are acted on at
``patch × tokens`` pixels. D4 acts by exact permutations, rescaling by bicubic interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class D4:
    """x ↦ rot90^k(hflip^f(x)); rot90 turns dim -2 towards dim -1 (torch.rot90)."""

    flip: int = 0
    k: int = 0

    def __post_init__(self):
        object.__setattr__(self, "flip", int(self.flip) % 2)
        object.__setattr__(self, "k", int(self.k) % 4)

    def __mul__(self, other: D4) -> D4:
        # R^k2 F^f2 R^k1 F^f1 = R^(k2 + (-1)^f2 k1) F^(f1+f2), since F R = R⁻¹ F.
        sign = -1 if self.flip else 1
        return D4(self.flip ^ other.flip, self.k + sign * other.k)

    def inverse(self) -> D4:
        # A flip composed with any rotation is an involution.
        return D4(self.flip, self.k if self.flip else -self.k)

    def map_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (size[1], size[0]) if self.k % 2 else size

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, self.k, dims=(-2, -1)) if self.k else x


@dataclass(frozen=True)
class Element:
    """A group element taking a token grid of size ``src`` to one of size ``dst``."""

    d: D4
    src: tuple[int, int]
    dst: tuple[int, int]

    @staticmethod
    def identity(size: tuple[int, int]) -> Element:
        return Element(D4(), tuple(size), tuple(size))

    def compose(self, other: Element) -> Element:
        """self ∘ other: apply ``other`` first."""
        if other.dst != self.src:
            raise ValueError(f"cannot compose: {other.dst} != {self.src}")
        return Element(self.d * other.d, other.src, self.dst)

    def inverse(self) -> Element:
        return Element(self.d.inverse(), self.dst, self.src)

    def act(self, x: torch.Tensor, unit: int = 1) -> torch.Tensor:
        """Act on B×C×H×W: a token grid (unit=1) or an image (unit=patch size)."""
        src = (self.src[0] * unit, self.src[1] * unit)
        if tuple(x.shape[-2:]) != src:
            raise ValueError(f"element expects a {src} grid, got {tuple(x.shape[-2:])}")
        mid = self.d.inverse().map_size(self.dst)
        if mid != self.src:
            x = F.interpolate(
                x, size=(mid[0] * unit, mid[1] * unit), mode="bicubic", align_corners=False
            )
        return self.d.apply(x)


def act_each(x: torch.Tensor, elements: list[Element], unit: int = 1) -> torch.Tensor:
    """Per-sample action; all elements must share ``dst`` so the results stack."""
    return torch.cat([g.act(x[i : i + 1], unit) for i, g in enumerate(elements)])


def relative(g1: list[Element], g2: list[Element]) -> list[Element]:
    """ρ mapping view 1's geometry to view 2's: g = g2 · g1⁻¹, per sample."""
    return [b.compose(a.inverse()) for a, b in zip(g1, g2)]


def _grid(gen: torch.Generator, base: tuple[int, int], scale, ratio) -> tuple[int, int]:
    area = base[0] * base[1] * float(torch.empty(1).uniform_(*scale, generator=gen))
    log_r = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    aspect = math.exp(float(log_r))
    w = max(1, round(math.sqrt(area * aspect)))
    h = max(1, round(math.sqrt(area / aspect)))
    return h, w


def sample_public(
    gen: torch.Generator, n: int, base: tuple[int, int], scale=(0.7, 1.3), ratio=(3 / 4, 4 / 3)
) -> tuple[list[Element], list[Element]]:
    """The public SER code's policy (spec/ser.md §3).

    Per sample: flip f and rot180 r ~ Bernoulli(½), the second view takes (¬f, ¬r).
    Per batch and view: one rot90 count and one token grid. Image order rot180, hflip,
    resize, rot90 equals ``R^(k+2r) F^f ∘ resize`` because flips and rot180 commute with
    axis-aligned resizing.
    """
    f = torch.randint(0, 2, (n,), generator=gen).tolist()
    r = torch.randint(0, 2, (n,), generator=gen).tolist()
    views = []
    for v in range(2):
        k90 = int(torch.randint(0, 4, (1,), generator=gen))
        grid = _grid(gen, base, scale, ratio)
        els = []
        for i in range(n):
            fi, ri = (f[i], r[i]) if v == 0 else (1 - f[i], 1 - r[i])
            d = D4(fi, k90 + 2 * ri)
            els.append(Element(d, tuple(base), D4(0, k90).map_size(grid)))
        views.append(els)
    return views[0], views[1]


def sample_independent(
    gen: torch.Generator, n: int, base: tuple[int, int], scale=(0.7, 1.3), ratio=(3 / 4, 4 / 3)
) -> tuple[list[Element], list[Element]]:
    """g1 and g2 drawn independently (any D4 element per sample, one grid per view)."""
    views = []
    for _ in range(2):
        grid = _grid(gen, base, scale, ratio)
        flips = torch.randint(0, 2, (n,), generator=gen).tolist()
        ks = torch.randint(0, 4, (n,), generator=gen).tolist()
        # Outputs must stack, so the grid is given in the output frame for every sample.
        views.append([Element(D4(f, k), tuple(base), grid) for f, k in zip(flips, ks)])
    return views[0], views[1]


POLICIES = {"public": sample_public, "independent": sample_independent}
