"""ImageNet-P with the run's ImageNet head: frame accuracy, flip probability, top-5 distance."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from harness.data.loading import loader_options
from harness.data.readers import PERTURBATIONS, ImageNetP
from harness.eval.imagenet_head import head_and_backbone
from harness.eval.robustness import imagenet_p_metrics
from harness.eval.transforms import eval_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


def imagenet_p(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    """Per perturbation: top-1/top-5 over all frames, flip probability and top-5 distance as
    the official code computes them (§3.3–3.4); "avg/…" over the 14 perturbations."""
    lc = cfg["linear"]
    tf = eval_transform(cfg["model"]["img_size"], lc["resize"])
    head, backbone, device, classes = head_and_backbone(run_dir, data_root, cfg, quiet)
    sets = ImageNetP.suite(root, PERTURBATIONS, classes=classes, transform=tf)
    out: dict = {}
    for p, reader in sets.items():
        logits, labels = [], []
        # One video per item (batch_size None), decoded by the job's workers, in order.
        videos = DataLoader(
            reader, batch_size=None, shuffle=False, **loader_options(cfg.get("runtime"), device)
        )
        for frames, y in videos:
            with torch.no_grad():
                logits.append(
                    head(backbone.features(frames.to(device), n_last=lc["n_last"]).float().cpu())
                )
            labels.append(y)
        m = imagenet_p_metrics(torch.stack(logits), torch.tensor(labels), p)
        out.update({f"{p}/{k}": v for k, v in m.items()})
    for k in ("top1", "top5", "flip_prob", "top5_dist"):
        out[f"avg/{k}"] = sum(out[f"{p}/{k}"] for p in sets) / len(sets)
    return out
