"""Linear probe (spec/evals.md §7.1): frozen backbone, concatenated final-LayerNorm [CLS] of
the last n blocks, one Linear(N(0, 0.01), bias 0), SGD m 0.9 wd 0, lr = base·B/256, cosine
per epoch; top-1/top-5 on val after the last epoch.

With ``augment`` (paper preset) features are recomputed every epoch under RandomResizedCrop +
flip, as the recipe does; without it (tiny/micro) they are extracted once and cached, which
at that scale changes nothing but the time it takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.data import ImageFolderDataset
from harness.eval.features import eval_backbone, extract
from harness.eval.imagenet_head import imagenet_head
from harness.eval.metrics import topk
from harness.eval.transforms import eval_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


def linear_probe(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """ImageNet top-1/top-5 of the run's linear head."""
    lc = cfg["linear"]
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    backbone, device = eval_backbone(run_dir)
    val = ImageFolderDataset(
        data_root, "val", transform=eval_transform(cfg["model"]["img_size"], lc["resize"])
    )
    vx, vy = extract(
        backbone,
        val,
        lc["n_last"],
        lc["batch_size"],
        device,
        "val features",
        quiet,
        runtime=cfg.get("runtime"),
    )
    with torch.no_grad():
        metrics = topk(head(vx.cpu()), vy)
    metrics["n_val"] = len(val)
    return metrics
