"""Linear probe (spec/evals.md §7.1) as SER's lincls_parallel.py runs it: frozen backbone,
concatenated final-LayerNorm [CLS] of the last n blocks, one Linear(N(0, 0.01), bias 0) per
base lr of the row's base, SGD m 0.9 wd 0, lr = base·B/256, cosine per epoch; the best
(lr, epoch) past ``select_from`` on the selection split is the head whose val top-1/top-5
are reported (``harness.eval.sweep``), with the selection (``select_lr``, ``select_epoch``,
``select_top1``) beside them.

With ``augment`` (paper preset) features are recomputed every epoch under RandomResizedCrop +
flip, as the recipe does; without it (tiny/micro) they are extracted once and cached, which
at that scale changes nothing but the time it takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.data import ImageFolderDataset
from harness.eval.features import eval_backbone, extract
from harness.eval.imagenet_head import imagenet_probe
from harness.eval.metrics import topk
from harness.eval.sweep import autocast
from harness.eval.transforms import eval_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 2


def linear_probe(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """ImageNet top-1/top-5 of the run's selected linear head, at ``linear.precision`` (SER's
    test pass runs backbone and head under the same autocast as training)."""
    lc = cfg["linear"]
    head, selection = imagenet_probe(run_dir, data_root, cfg, quiet)
    backbone, device = eval_backbone(run_dir)
    val = ImageFolderDataset(
        data_root, "val", transform=eval_transform(cfg["model"]["img_size"], lc["resize"])
    )
    # Small presets read cached fp32 features (shared with k-NN and the MLP probe); the
    # augmented paper recipe extracts as it trained, under the probe's precision.
    with autocast(device, lc["precision"] if lc["augment"] else "fp32"):
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
    with torch.no_grad(), autocast("cpu", lc["precision"]):
        metrics = topk(head(vx.cpu()).float(), vy)
    metrics["n_val"] = len(val)
    metrics["select_lr"] = selection["lr"]
    metrics["select_epoch"] = selection["epoch"]
    metrics["select_top1"] = selection["top1"]
    return metrics
