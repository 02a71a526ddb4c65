"""Equivariance score of token maps (Table 4; paper Appendix B.2, spec/evals.md §5.2).

score_g = cos(ρ_g(f(x)), f(g·x)) where f(x) is a B×D×h×w patch-token map, g acts on the image
(at patch × tokens pixels) and ρ_g on the token grid through harness.model.group.Element, so the
score uses exactly the action SER trains with. g ranges over rot90 (k = 1, 2, 3, averaged),
hflip and square rescales of the token grid. Three variants per g:

* ``token``  — mean over images and positions of the per-position cosine (the main number);
* ``flat``   — cosine of the whole flattened maps, per image;
* ``pooled`` — cosine of the spatially averaged maps: for D4 the pooled map is ρ-invariant,
  so this measures how invariant the pooled last-layer representation is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.data import ImageFolderDataset
from harness.data.loading import loader_options
from harness.eval.features import eval_backbone
from harness.eval.transforms import eval_transform
from harness.model.group import D4, Element

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


VARIANTS = ("token", "flat", "pooled")
# Token-grid areas relative to the base grid; SER samples areas in [0.7, 1.3].
SCALE_AREAS = (0.7, 0.85, 1.15, 1.3)


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


def equivariance(
    encode, batches: Iterable[torch.Tensor], grid, patch: int, areas=SCALE_AREAS, quiet: bool = True
) -> dict[str, float]:
    """{"equiv_<g>" (token variant), "equiv_<g>_flat", "equiv_<g>_pooled"} for g in rotation,
    hflip, scale: cosines in [-1, 1], averaged over images and over the elements of g."""
    groups = transformations(grid, areas)
    sums = {(name, v): 0.0 for name in groups for v in VARIANTS}
    counts = {name: 0 for name in groups}
    for x in tqdm(batches, desc="equivariance", disable=quiet, leave=False):
        with torch.no_grad():
            fx = encode(x)
        for name, elements in groups.items():
            for g in elements:
                s = equivariance_scores(encode, x, g, patch, fx)
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
    last layer and at any extra ``layers`` (keys prefixed ``layer<l>/``)."""
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
        )
        prefix = "" if layer == depth else f"layer{layer}/"
        out.update({prefix + k: v for k, v in scores.items()})
    return out
