"""Equivariance score of token maps (Table 4; paper Appendix B.2, spec/evals.md §5.2).

f(x) is a B×D×h×w patch-token map; elements g act on images (at patch × tokens pixels) and on
token grids (ρ_g) through harness.model.group.Element, so the score uses exactly the action SER
trains with. One score per transformation — rotation (rot90), hflip, scale (bicubic rescales of
the token grid) — and per variant:

* ``token``  — mean over images and positions of the per-position cosine (the main number);
* ``flat``   — cosine of the whole flattened maps, per image;
* ``pooled`` — cosine of the spatially averaged maps: for D4 the pooled map is ρ-invariant,
  so this measures how invariant the pooled last-layer representation is.

Two protocols (``equivariance.protocol``):

* ``sampled`` (the default) — the paper's Appendix B.2: "we sampled the Transformation
  parameter from Rotation90°, horizontal flip, and scaling" and scored
  E_{x, (g1, g2) ~ G} d(ρ_g(f(x)), f(ρ_g(x))), g = g2·g1⁻¹, d the cosine, at the last layer —
  the training loss (Section 3, Algorithm 1 lines 12–15: z1 = f(g1·x), z2 = f(g2·x),
  ρ_g(z1) against z2) with f^(1) replaced by f. So per image and transformation, ``pairs``
  pairs (default 1) are drawn independently from that transformation's distribution, and
  the score is cos(ρ_{g2·g1⁻¹}(f(g1·x)), f(g2·x)): rotation g_i = rot90^k_i, k_i ~ U{0..3};
  hflip g_i = hflip^f_i, f_i ~ Bernoulli(½); scale g_i = the rescale of the token grid to
  SER's sampled grid (area U(min(areas), max(areas)) × the base grid's, aspect log-uniform
  in [3/4, 4/3], w = round(√(area·aspect)), h = round(√(area/aspect)); SER builder/utils.py
  ``get_params``, spec/evals.md §0), anisotropic. Pairs with g2 = g1 (a relative identity:
  1/4 of rotation pairs, 1/2 of flip pairs, the pairs with equal grids) are kept, as the
  expectation over (g1, g2) has them; they score 1. Draws are seeded per (seed, image
  position, transformation, pair), so the same images get the same pairs at every layer and
  whatever the batch size.
* ``fixed`` — a fixed set per transformation applied to x itself: rot90 k = 1, 2, 3
  (averaged), hflip, and square rescales of the token grid to the ``areas``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.data import ImageFolderDataset
from harness.data.batches import derive_seed
from harness.data.loading import loader_options
from harness.eval.features import eval_backbone
from harness.eval.transforms import eval_transform
from harness.model.group import D4, Element, _grid, act_each, relative

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 2


VARIANTS = ("token", "flat", "pooled")
# Token-grid areas relative to the base grid; SER samples areas in [0.7, 1.3].
SCALE_AREAS = (0.7, 0.85, 1.15, 1.3)
# SER's aspect ratios of a sampled grid (log-uniform).
ASPECT = (3 / 4, 4 / 3)
PROTOCOLS = ("sampled", "fixed")
FAMILIES = ("rotation", "hflip", "scale")


def transformations(grid: tuple[int, int], areas=SCALE_AREAS) -> dict[str, list[Element]]:
    """The elements each score averages over, acting on a ``grid`` token map."""
    grid = tuple(grid)
    sides = sorted({max(1, round(grid[0] * a**0.5)) for a in areas} - {grid[0]})
    return {
        "rotation": [Element(D4(0, k), grid, D4(0, k).map_size(grid)) for k in (1, 2, 3)],
        "hflip": [Element(D4(1, 0), grid, grid)],
        "scale": [Element(D4(), grid, (s, round(s * grid[1] / grid[0]))) for s in sides],
    }


@torch.no_grad()
def equivariance_scores(
    encode: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    g: Element,
    patch: int,
    fx: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image cosines (one B-vector per variant) between ρ_g(f(x)) and f(g·x); ``fx`` is
    f(images) when already computed."""
    moved = g.act(encode(images) if fx is None else fx)
    direct = encode(g.act(images, unit=patch))
    return {
        "token": F.cosine_similarity(moved, direct, dim=1).flatten(1).mean(1),
        "flat": F.cosine_similarity(moved.flatten(1), direct.flatten(1), dim=1),
        "pooled": F.cosine_similarity(moved.mean((2, 3)), direct.mean((2, 3)), dim=1),
    }


def sample_pair(
    family: str, gen: torch.Generator, grid: tuple[int, int], areas=SCALE_AREAS
) -> tuple[Element, Element]:
    """(g1, g2), both acting on the ``grid`` of x, drawn independently from ``family``'s
    distribution (module docstring)."""
    grid = tuple(grid)
    if family == "rotation":
        ks = torch.randint(0, 4, (2,), generator=gen).tolist()
        return tuple(Element(D4(0, k), grid, D4(0, k).map_size(grid)) for k in ks)
    if family == "hflip":
        fs = torch.randint(0, 2, (2,), generator=gen).tolist()
        return tuple(Element(D4(f, 0), grid, grid) for f in fs)
    if family == "scale":
        scale = (min(areas), max(areas))
        return tuple(Element(D4(), grid, _grid(gen, grid, scale, ASPECT)) for _ in range(2))
    raise ValueError(f"unknown transformation {family!r}: use one of {FAMILIES}")


def sampled_pairs(
    family: str, seed: int, positions: Iterable[int], grid, areas=SCALE_AREAS, pairs: int = 1
) -> list[list[tuple[Element, Element]]]:
    """``pairs`` pairs for each image position, each from its own seed."""
    out = []
    for j in range(pairs):
        per_image = []
        for i in positions:
            gen = torch.Generator().manual_seed(derive_seed(seed, "equivariance", family, i, j))
            per_image.append(sample_pair(family, gen, grid, areas))
        out.append(per_image)
    return out


def _encode_each(encode, x: torch.Tensor, elements: list[Element], patch: int) -> list:
    """[f(g_i·x_i)] (1×D×h×w each): the images are batched by the grid they land on."""
    out = [None] * len(x)
    by_grid: dict[tuple[int, int], list[int]] = {}
    for i, g in enumerate(elements):
        by_grid.setdefault(g.dst, []).append(i)
    for idx in by_grid.values():
        z = encode(act_each(x[idx], [elements[i] for i in idx], unit=patch))
        for j, i in enumerate(idx):
            out[i] = z[j : j + 1]
    return out


@torch.no_grad()
def pair_scores(
    encode: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    pairs: list[tuple[Element, Element]],
    patch: int,
) -> dict[str, torch.Tensor]:
    """Per-image cosines (one B-vector per variant) between ρ_g(f(g1·x)) and f(g2·x),
    g = g2·g1⁻¹, for the pair (g1, g2) of each image."""
    g1s, g2s = [p[0] for p in pairs], [p[1] for p in pairs]
    z1 = _encode_each(encode, images, g1s, patch)
    z2 = _encode_each(encode, images, g2s, patch)
    rows = {v: [] for v in VARIANTS}
    for g, a, direct in zip(relative(g1s, g2s), z1, z2):
        moved = g.act(a)
        rows["token"].append(F.cosine_similarity(moved, direct, dim=1).flatten(1).mean(1))
        rows["flat"].append(F.cosine_similarity(moved.flatten(1), direct.flatten(1), dim=1))
        rows["pooled"].append(F.cosine_similarity(moved.mean((2, 3)), direct.mean((2, 3)), dim=1))
    return {v: torch.cat(r) for v, r in rows.items()}


def equivariance(
    encode,
    batches: Iterable[torch.Tensor],
    grid,
    patch: int,
    areas=SCALE_AREAS,
    quiet: bool = True,
    *,
    protocol: str = "sampled",
    seed: int = 0,
    pairs: int = 1,
) -> dict[str, float]:
    """{"equiv_<g>" (token variant), "equiv_<g>_flat", "equiv_<g>_pooled"} for g in rotation,
    hflip, scale (none for scale when ``areas`` is empty): cosines in [-1, 1], averaged over
    images and over the ``pairs`` sampled pairs per image ("sampled", seeded by ``seed``)
    or the fixed elements of g ("fixed")."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"equivariance protocol={protocol!r}: use one of {PROTOCOLS}")
    groups = transformations(grid, areas) if protocol == "fixed" else None
    families = [f for f in FAMILIES if f != "scale" or len(areas)]
    sums = {(name, v): 0.0 for name in families for v in VARIANTS}
    counts = {name: 0 for name in families}
    seen = 0
    for x in tqdm(batches, desc="equivariance", disable=quiet, leave=False):
        positions = range(seen, seen + len(x))
        seen += len(x)
        if protocol == "fixed":
            with torch.no_grad():
                fx = encode(x)
            scored = {
                n: [equivariance_scores(encode, x, g, patch, fx) for g in groups[n]]
                for n in families
            }
        else:
            scored = {
                n: [
                    pair_scores(encode, x, ps, patch)
                    for ps in sampled_pairs(n, seed, positions, grid, areas, pairs)
                ]
                for n in families
            }
        for name, per_element in scored.items():
            for s in per_element:
                for v in VARIANTS:
                    sums[name, v] += s[v].double().sum().item()
                counts[name] += len(x)
    out = {}
    for (name, v), total in sums.items():
        if counts[name]:
            out[f"equiv_{name}" + ("" if v == "token" else f"_{v}")] = total / counts[name]
    return out


def backbone_encoder(backbone, layer: int | None = None, final_norm: bool = True):
    """f(x) = the patch-token map after block ``layer`` (default: the last). The last layer gets
    the final LayerNorm (it is the network's output); SER's equivariance layer comes with
    ``norm_equiv`` from the backbone instead; other layers are raw block outputs."""
    depth = len(backbone.blocks)
    layer = depth if layer is None else layer
    has_own_norm = layer == backbone.cfg.equiv_layer and backbone.norm_equiv is not None

    def encode(x):
        t = backbone(x, taps=(layer,)).tokens[layer]
        if final_norm and layer == depth and not has_own_norm:
            t = backbone.vit.norm(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return t

    return encode


def run_equivariance(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: the scores on ``n_images`` val images spread evenly over the split, at the
    last layer and at any extra ``layers`` (keys prefixed ``layer<l>/``), by ``protocol``;
    "sampled" draws from ``cfg["seed"]``, the same pairs at every layer."""
    from torch.utils.data import DataLoader, Subset

    opts = cfg["equivariance"]
    backbone, device = eval_backbone(run_dir)
    size, patch = cfg["model"]["img_size"], cfg["model"]["patch_size"]
    tf = eval_transform(size, cfg["linear"]["resize"])
    val = ImageFolderDataset(data_root, "val", transform=tf)
    # An even spread over classes: ImageFolder lists images class by class.
    n = min(opts["n_images"], len(val))
    subset = Subset(val, [i * len(val) // n for i in range(n)])
    loader = DataLoader(
        subset,
        batch_size=opts["batch_size"],
        shuffle=False,
        **loader_options(cfg.get("runtime"), device),
    )
    grid = (size // patch, size // patch)
    out = {}
    depth = len(backbone.blocks)
    for layer in [depth] + [l for l in opts["layers"] if l != depth]:
        scores = equivariance(
            backbone_encoder(backbone, layer),
            (x.to(device) for x, _ in loader),
            grid,
            patch,
            opts["areas"],
            quiet,
            protocol=opts["protocol"],
            seed=cfg.get("seed", 0),
        )
        prefix = "" if layer == depth else f"layer{layer}/"
        out.update({prefix + k: v for k, v in scores.items()})
    return out


def measure_identity_pairs() -> str:
    """Share of sampled pairs whose relative element g2·g1⁻¹ is the identity (they score 1),
    on ViT-S/16's 14×14 grid, 1000 images, seed 0."""
    out = []
    for family in FAMILIES:
        (pairs,) = sampled_pairs(family, 0, range(1000), (14, 14))
        same = sum(g1 == g2 for g1, g2 in pairs)
        out.append(f"{family} {same / 10:.1f} %")
    return "sampled pairs with g2·g1⁻¹ = identity (score 1): " + ", ".join(out)


def measure_view_reading() -> str:
    """The paper's formula read literally, cos(ρ_g(f(x)), f(g·x)) with g = g2·g1⁻¹ on x itself,
    against the harness's training-loss reading cos(ρ_g(f(g1·x)), f(g2·x)), same D4 pairs, on
    a fixed random 3×3-conv token map of 64 random 16-px images (patch 4)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 3, 3, 3, generator=gen)
    x = torch.randn(64, 3, 16, 16, generator=gen)

    def encode(t):
        return torch.tanh(F.conv2d(F.avg_pool2d(t, 4), w, padding=1))

    out = []
    for family in ("rotation", "hflip"):
        (pairs,) = sampled_pairs(family, 0, range(len(x)), (4, 4))
        here = pair_scores(encode, x, pairs, 4)["token"].mean().item()
        lit = [(Element.identity((4, 4)), g2.compose(g1.inverse())) for g1, g2 in pairs]
        literal = pair_scores(encode, x, lit, 4)["token"].mean().item()
        out.append(f"{family} literal {literal:.4f} vs harness {here:.4f}")
    return "equivariance reading, random conv map: " + ", ".join(out)
