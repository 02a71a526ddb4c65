"""ImageNet-C with the run's ImageNet head: top-1/top-5 per corruption and mCE."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from harness.data.readers import CORRUPTIONS, ImageNetC
from harness.eval.features import extract
from harness.eval.imagenet_head import head_and_backbone
from harness.eval.metrics import topk
from harness.eval.robustness import imagenet_c_summary
from harness.eval.transforms import eval_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


def imagenet_c(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    """Top-1/top-5 per corruption (mean over severities 1–5) and their average, plus mCE
    (spec/evals.md §2.4). A missing corruption or severity stops before any number."""
    lc = cfg["linear"]
    tf = eval_transform(cfg["model"]["img_size"], lc["resize"])
    head, backbone, device, classes = head_and_backbone(run_dir, data_root, cfg, quiet)
    sets = ImageNetC.suite(root, CORRUPTIONS, classes=classes, transform=tf)
    top1, top5 = defaultdict(list), defaultdict(list)
    for (c, s), reader in sorted(sets.items()):
        x, y = extract(
            backbone,
            reader,
            lc["n_last"],
            lc["batch_size"],
            device,
            f"{c}/{s}",
            quiet,
            runtime=cfg.get("runtime"),
        )
        with torch.no_grad():
            m = topk(head(x.cpu()), y)
        top1[c].append(m["top1"])
        top5[c].append(m["top5"])
    return imagenet_c_summary(top1, top5, corruptions=CORRUPTIONS)
