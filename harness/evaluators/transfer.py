"""Columns read with a run's ImageNet linear head (ImageNet-V2, -Sketch, -R; spec/evals.md §1)
and 3DIEBench's own 55-way linear probe (§4.2). Each set comes through its reader, so labels
live in the head's label space and an incomplete tree stops the evaluation."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from harness.data import ImageFolderDataset
from harness.data.readers import READERS, IEBench3D
from harness.errors import HarnessError
from harness.evaluators.linear import eval_transform, extract, imagenet_head, topk


def _backbone(run_dir):
    from harness.train import load_trained

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return load_trained(run_dir, device).eval_backbone().to(device).eval(), device


def with_imagenet_head(run_dir: Path, data_root: Path, cfg: dict, dataset: str, root: Path,
                       quiet: bool = False) -> dict:
    lc = cfg["linear"]
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    classes = ImageFolderDataset(data_root, "train").classes
    reader = READERS[dataset](root, classes=classes,
                              transform=eval_transform(cfg["model"]["img_size"], lc["resize"]))
    backbone, device = _backbone(run_dir)
    x, y = extract(backbone, reader, lc["n_last"], lc["batch_size"], device, f"{dataset} features", quiet)
    with torch.no_grad():
        logits = head(x.cpu())
    if hasattr(reader, "mask_logits"):   # ImageNet-R: predictions only among its 200 classes
        logits = reader.mask_logits(logits)
    return {**topk(logits, y), "n_images": len(reader)}


def _by_object(reader: IEBench3D, feats: torch.Tensor, labels: torch.Tensor):
    """N objects × V views × D, and one label per object."""
    rows = defaultdict(list)
    for i, (obj, k) in enumerate(reader.views):
        rows[obj].append((k, i))
    counts = {len(v) for v in rows.values()}
    if len(counts) != 1:
        raise HarnessError(f"3DIEBench objects under {reader.root} have different numbers of views "
                           f"({sorted(counts)}): every object needs all its image_k.jpg")
    order = [[i for _, i in sorted(v)] for _, v in sorted(rows.items())]
    idx = torch.tensor(order)
    return feats[idx], labels[idx[:, 0]]


def iebench_linear(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    from harness.evaluators.threedie import classify_objects

    lc = cfg["linear"]
    backbone, device = _backbone(run_dir)
    split = {}
    for name in ("train", "val"):
        reader = IEBench3D(root, name, transform=eval_transform(cfg["model"]["img_size"], lc["resize"]))
        x, y = extract(backbone, reader, lc["n_last"], lc["batch_size"], device, f"3DIEBench {name}", quiet)
        split[name] = _by_object(reader, x, y)
        n_classes = len(reader.classes)
    (tx, ty), (vx, vy) = split["train"], split["val"]
    return {**classify_objects(tx, ty, vx, vy, n_classes=n_classes, seed=cfg["seed"], quiet=quiet),
            "n_objects": len(vy)}


TRANSFER = {
    **{d: (lambda run_dir, data_root, cfg, root, quiet=False, d=d:
           with_imagenet_head(run_dir, data_root, cfg, d, root, quiet))
       for d in ("imagenet_v2", "imagenet_sketch", "imagenet_r")},
    "3diebench": iebench_linear,
}
