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


def _head_and_backbone(run_dir, data_root, cfg, quiet):
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    backbone, device = _backbone(run_dir)
    return head, backbone, device, ImageFolderDataset(data_root, "train").classes


def imagenet_c(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    """Top-1/top-5 per corruption (mean over severities 1–5) and their average, plus mCE
    (spec/evals.md §2.4). A missing corruption or severity stops before any number."""
    from harness.data.readers import CORRUPTIONS, ImageNetC
    from harness.evaluators.robustness import imagenet_c_summary

    lc = cfg["linear"]
    tf = eval_transform(cfg["model"]["img_size"], lc["resize"])
    head, backbone, device, classes = _head_and_backbone(run_dir, data_root, cfg, quiet)
    sets = ImageNetC.suite(root, CORRUPTIONS, classes=classes, transform=tf)
    top1, top5 = defaultdict(list), defaultdict(list)
    for (c, s), reader in sorted(sets.items()):
        x, y = extract(backbone, reader, lc["n_last"], lc["batch_size"], device, f"{c}/{s}", quiet)
        with torch.no_grad():
            m = topk(head(x.cpu()), y)
        top1[c].append(m["top1"])
        top5[c].append(m["top5"])
    return imagenet_c_summary(top1, top5, corruptions=CORRUPTIONS)


def imagenet_p(run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False) -> dict:
    """Per perturbation: top-1/top-5 over all frames, flip probability and top-5 distance as
    the official code computes them (§3.3–3.4); "avg/…" over the 14 perturbations."""
    from harness.data.readers import PERTURBATIONS, ImageNetP
    from harness.evaluators.robustness import imagenet_p_metrics

    lc = cfg["linear"]
    tf = eval_transform(cfg["model"]["img_size"], lc["resize"])
    head, backbone, device, classes = _head_and_backbone(run_dir, data_root, cfg, quiet)
    sets = ImageNetP.suite(root, PERTURBATIONS, classes=classes, transform=tf)
    out: dict = {}
    for p, reader in sets.items():
        logits, labels = [], []
        for frames, y in reader:
            with torch.no_grad():
                logits.append(head(backbone.features(frames.to(device), n_last=lc["n_last"]).float().cpu()))
            labels.append(y)
        m = imagenet_p_metrics(torch.stack(logits), torch.tensor(labels), p)
        out.update({f"{p}/{k}": v for k, v in m.items()})
    for k in ("top1", "top5", "flip_prob", "top5_dist"):
        out[f"avg/{k}"] = sum(out[f"{p}/{k}"] for p in sets) / len(sets)
    return out


TRANSFER = {
    **{d: (lambda run_dir, data_root, cfg, root, quiet=False, d=d:
           with_imagenet_head(run_dir, data_root, cfg, d, root, quiet))
       for d in ("imagenet_v2", "imagenet_sketch", "imagenet_r")},
    "3diebench": iebench_linear,
    "imagenet_c": imagenet_c,
    "imagenet_p": imagenet_p,
}
