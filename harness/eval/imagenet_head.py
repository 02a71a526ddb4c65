"""A run's ImageNet linear head (spec/evals.md §7.1), trained once and stored beside the run:
the linear probe reads ImageNet val with it and every transfer column (V2, Sketch, R, C, P)
reads its set with it, as the paper does."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from harness.data import ImageFolderDataset
from harness.data.loading import SeededDraws, loader_options
from harness.eval.features import checkpoint_id, eval_backbone, run_features
from harness.eval.heads import fit_linear, train_linear_head
from harness.eval.transforms import train_transform
from harness.io import save_torch


def imagenet_head(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False) -> nn.Linear:
    """The ImageNet linear head of a run, trained once and reused by every transfer column
    (V2, Sketch, R read it as the paper does). Keyed by checkpoint and probe settings."""
    lc = cfg["linear"]
    key = json.dumps(
        [checkpoint_id(Path(run_dir) / "checkpoint.pt"), lc, cfg["seed"]], sort_keys=True
    )
    path = Path(run_dir) / "eval" / f"linear-head-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        head = nn.Linear(*saved["shape"])
        head.load_state_dict(saved["state"])
        return head
    if lc["augment"]:
        backbone, device = eval_backbone(run_dir)
        train = ImageFolderDataset(
            data_root, "train", transform=train_transform(cfg["model"]["img_size"])
        )
        head = _fit_augmented(
            backbone, train, len(train.classes), lc, cfg["seed"], device, cfg.get("runtime"), quiet
        )
    else:
        # Cached features, shared with the k-NN and MLP probes of the same checkpoint.
        tr, va = run_features(run_dir, data_root, cfg, quiet)
        head = fit_linear(
            tr["cls"],
            tr["labels"],
            va["n_classes"],
            lc["epochs"],
            lc["batch_size"],
            lc["base_lr"],
            cfg["seed"],
            quiet=quiet,
        )
    save_torch(path, {"shape": (head.in_features, head.out_features), "state": head.state_dict()})
    return head


def _fit_augmented(backbone, train, n_classes, lc, seed, device, runtime, quiet) -> nn.Linear:
    """The paper recipe: fresh augmented features every epoch (GPU-scale); each image's draw
    is its own (SeededDraws), whatever the number of loader workers."""
    g = torch.Generator().manual_seed(seed)
    draws = SeededDraws(train, seed)
    epochs = itertools.count()
    loader = DataLoader(
        draws,
        batch_size=lc["batch_size"],
        shuffle=True,
        generator=g,
        drop_last=False,
        **loader_options(runtime, device),
    )

    def batches():
        draws.set_epoch(next(epochs))
        for x, y in loader:
            with torch.no_grad():
                yield backbone.features(x.to(device), n_last=lc["n_last"]).float(), y.to(device)

    return train_linear_head(
        batches,
        backbone.width * lc["n_last"],
        n_classes,
        lc["epochs"],
        lc["batch_size"],
        lc["base_lr"],
        g,
        device,
        quiet,
    )


def head_and_backbone(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False):
    """What every column read with the ImageNet head needs: the head, the frozen backbone, its
    device and ImageNet's class list (the head's label space)."""
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    backbone, device = eval_backbone(run_dir)
    return head, backbone, device, ImageFolderDataset(data_root, "train").classes
