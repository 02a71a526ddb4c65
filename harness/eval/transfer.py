"""ImageNet-V2, -Sketch and -R read with the run's ImageNet linear head (spec/evals.md §1).
Each set comes through its reader, so labels live in the head's label space and an
incomplete tree stops the evaluation."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.data import ImageFolderDataset
from harness.data.readers import READERS
from harness.eval.features import eval_backbone, extract
from harness.eval.imagenet_head import imagenet_head
from harness.eval.metrics import topk
from harness.eval.transforms import eval_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 2


def with_imagenet_head(
    run_dir: Path, data_root: Path, cfg: dict, dataset: str, root: Path, quiet: bool = False
) -> dict:
    """Top-1/top-5 of the ImageNet head on ``dataset`` (V2, Sketch or R) read from ``root``."""
    lc = cfg["linear"]
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    classes = ImageFolderDataset(data_root, "train").classes
    reader = READERS[dataset](
        root, classes=classes, transform=eval_transform(cfg["model"]["img_size"], lc["resize"])
    )
    backbone, device = eval_backbone(run_dir)
    x, y = extract(
        backbone,
        reader,
        lc["n_last"],
        lc["batch_size"],
        device,
        f"{dataset} features",
        quiet,
        runtime=cfg.get("runtime"),
    )
    with torch.no_grad():
        logits = head(x.cpu())
    if hasattr(reader, "mask_logits"):  # ImageNet-R: predictions only among its 200 classes
        logits = reader.mask_logits(logits)
    return {**topk(logits, y), "n_images": len(reader)}
