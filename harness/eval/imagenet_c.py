"""ImageNet-C with the run's ImageNet head: top-1/top-5 per corruption and mCE.

Input (``robustness.preprocess``): "official", as hendrycks/robustness@8190fe3
``ImageNet-C/test.py`` feeds the released JPEGs (stored 224², the generator's Resize(256) +
CenterCrop(224) already applied): CenterCrop to the model's ``img_size`` → ToTensor →
Normalize, no resize; "resize", the linear probe's val transform (Resize ``linear.resize``,
bicubic, + CenterCrop), which on 224² images upsamples by 256/224 and keeps the central
196 px of the stored image.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data.readers import CORRUPTIONS, ImageNetC
from harness.eval.features import extract
from harness.eval.imagenet_head import head_and_backbone
from harness.eval.metrics import topk
from harness.eval.robustness import imagenet_c_summary
from harness.eval.transforms import refuse_smaller, robustness_input

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
# 2: robustness.preprocess, "official" (stored size, no resize) by default.
VERSION = 2


def imagenet_c_transform(cfg: dict):
    """The transform ``robustness.preprocess`` names, for the job's ``cfg``."""
    return robustness_input(cfg, "an ImageNet-C image")


def check_stored_sizes(sets: dict, img_size: int) -> None:
    """Under "official", the first image of every set must be at least ``img_size`` on each
    side (its header only is read): one line naming the file otherwise, before any feature."""
    for reader in sets.values():
        if reader.samples:
            path = reader.samples[0][0]
            with Image.open(path) as im:
                refuse_smaller(*im.size, img_size, f"ImageNet-C image {path}")


def imagenet_c(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    """Top-1/top-5 per corruption (mean over severities 1–5) and their average, plus mCE
    (spec/evals.md §2.4). A missing corruption or severity stops before any number."""
    lc = cfg["linear"]
    tf = imagenet_c_transform(cfg)
    head, backbone, device, classes = head_and_backbone(run_dir, data_root, cfg, quiet)
    sets = ImageNetC.suite(root, CORRUPTIONS, classes=classes, transform=tf)
    if cfg["robustness"]["preprocess"] == "official":
        check_stored_sizes(sets, cfg["model"]["img_size"])
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


def resize_effect(stored: int = 224, img_size: int = 224, resize: int = 256) -> str:
    """What robustness.preprocess=resize changes on a stored ``stored``² image against
    "official": the share of the stored image the model sees and the mean |Δ| of the
    normalized input, on a fixed smooth test image."""
    from harness.eval.transforms import eval_transform, stored_transform

    u = np.linspace(0, 1, stored)
    rgb = np.stack(
        [np.outer(u, 1 - u), np.sin(6 * np.add.outer(u, u)) * 0.5 + 0.5, np.outer(1 - u, u)], -1
    )
    img = Image.fromarray(np.round(255 * rgb).astype(np.uint8))
    kept = img_size * stored / resize
    diff = (eval_transform(img_size, resize)(img) - stored_transform(img_size)(img)).abs().mean()
    return (
        f"robustness.preprocess=resize on a {stored}² image: the model sees its central "
        f"{kept:.0f}×{kept:.0f} px ({100 * kept**2 / stored**2:.1f} % of it) upsampled "
        f"{resize / stored:.3f}×, official all of it unscaled; mean |Δinput| "
        f"{diff.item():.3f} (normalized units) on a smooth test image"
    )
