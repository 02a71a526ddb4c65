"""t-SNE of frozen features (Figures 4 and 5): up to 20 random classes of a set, final
[CLS] features, scikit-learn's TSNE. Returns the 2-D points (a figure's data, not a score).

ImageNet val is read with the linear probe's val transform; ImageNet-C with the ImageNet-C
column's (``robustness.preprocess``, "official" by default: the stored 224² images, no
resize, harness.eval.imagenet_c), so both sets reach the encoder at one geometry."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from harness.config.evaluations import EVALUATIONS
from harness.data import ImageFolderDataset
from harness.data.readers import ImageNetC
from harness.eval.features import eval_backbone, extract
from harness.eval.transforms import eval_transform, robustness_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
# 2: ImageNet-C read as the ImageNet-C column reads it (robustness.preprocess).
VERSION = 2


DEFAULTS = EVALUATIONS["tsne"]


def _pick(dataset, n_classes: int, per_class: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of ``per_class`` images from each of ``n_classes`` random classes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([y for _, y in dataset.samples])
    present = labels.unique()
    chosen = present[torch.randperm(len(present), generator=g)[:n_classes]].sort().values
    idx = [
        i for c in chosen.tolist() for i in (labels == c).nonzero().flatten()[:per_class].tolist()
    ]
    return idx, chosen.tolist()


def run_tsne(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: 2-D t-SNE of the final [CLS] of ``n_classes`` × ``per_class`` ImageNet val
    images, or of ImageNet-C (one corruption, one severity) when ``dataset_root`` is given."""
    from sklearn.manifold import TSNE

    opts = cfg["tsne"]
    lc = cfg["linear"]
    if dataset_root is not None:
        # The ImageNet-C column's input; the section when the job carries it, else its default.
        rob = cfg.get("robustness", EVALUATIONS["robustness"])
        tf = robustness_transform(
            rob["preprocess"], cfg["model"]["img_size"], lc["resize"], "an ImageNet-C image"
        )
        classes = ImageFolderDataset(data_root, "train").classes
        ds = ImageNetC(
            dataset_root, opts["corruption"], opts["severity"], classes=classes, transform=tf
        )
    else:
        tf = eval_transform(cfg["model"]["img_size"], lc["resize"])
        ds = ImageFolderDataset(data_root, "val", transform=tf)
    idx, chosen = _pick(ds, opts["n_classes"], opts["per_class"], cfg["seed"])
    backbone, device = eval_backbone(run_dir)
    x, y = extract(
        backbone,
        Subset(ds, idx),
        1,
        lc["batch_size"],
        device,
        "t-SNE features",
        quiet,
        runtime=cfg.get("runtime"),
    )
    perplexity = min(opts["perplexity"], (len(x) - 1) / 3)
    pts = TSNE(2, perplexity=perplexity, init="pca", random_state=cfg["seed"]).fit_transform(
        x.numpy()
    )
    return {
        "points": pts.round(4).tolist(),
        "labels": y.tolist(),
        "classes": chosen,
        "n_points": len(y),
        "set": "imagenet"
        if dataset_root is None
        else f"imagenet_c/{opts['corruption']}/{opts['severity']}",
    }
