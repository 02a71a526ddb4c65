"""ImageNet-P with the run's ImageNet head: frame accuracy, flip probability, top-5 distance.

Input (``robustness.preprocess``): "official", as hendrycks/robustness@8190fe3
``ImageNet-P/test.py`` with ``utils/video_loader.py`` feeds each OpenCV-decoded frame (stored
224²): ToTensor → Normalize, no resize, ``view(-1, 3, 224, 224)``; here frames are
centre-cropped to the model's ``img_size`` (a no-op on the released 224² frames) and a frame
smaller than it is refused. "resize": the linear probe's val transform (Resize
``linear.resize``, bicubic, + CenterCrop).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from harness.data.loading import loader_options
from harness.data.readers import PERTURBATIONS, ImageNetP
from harness.eval.imagenet_head import head_and_backbone
from harness.eval.robustness import imagenet_p_metrics
from harness.eval.transforms import refuse_smaller, robustness_input

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
# 2: robustness.preprocess, "official" (stored size, no resize) by default.
VERSION = 2


def imagenet_p_transform(cfg: dict):
    """The per-frame transform ``robustness.preprocess`` names, for the job's ``cfg``."""
    return robustness_input(cfg, "an ImageNet-P frame")


def first_frame_size(path) -> tuple[int, int]:
    """(width, height) of a video's first frame, decoded with OpenCV as the reader does."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        ok, bgr = cap.read()
    finally:
        cap.release()
    return (bgr.shape[1], bgr.shape[0]) if ok else (0, 0)


def check_stored_sizes(sets: dict, img_size: int) -> None:
    """Under "official", the first video of every perturbation must have frames of at least
    ``img_size`` on each side: one line naming the file otherwise, before any feature."""
    for reader in sets.values():
        if reader.samples:
            path = reader.samples[0][0]
            size = first_frame_size(path)
            if size != (0, 0):  # an undecodable video is the reader's to report
                refuse_smaller(*size, img_size, f"ImageNet-P video {path}")


def imagenet_p(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    """Per perturbation: top-1/top-5 over all frames, flip probability and top-5 distance as
    the official code computes them (§3.3–3.4); "avg/…" over the 14 perturbations."""
    lc = cfg["linear"]
    tf = imagenet_p_transform(cfg)
    head, backbone, device, classes = head_and_backbone(run_dir, data_root, cfg, quiet)
    sets = ImageNetP.suite(root, PERTURBATIONS, classes=classes, transform=tf)
    if cfg["robustness"]["preprocess"] == "official":
        check_stored_sizes(sets, cfg["model"]["img_size"])
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
