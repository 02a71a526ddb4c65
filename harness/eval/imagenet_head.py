"""A run's ImageNet linear head (spec/evals.md §7.1), swept, selected and stored beside the
run as SER's lincls_parallel.py does it (``harness.eval.sweep``): the linear probe reads
ImageNet val with it and every transfer column (V2, Sketch, R, C, P) reads its set with it,
as the paper does. Selection is on ``linear.select_on``: "val" is the split the probe reports
(SER's code; its captions say so), "heldout" a seeded share of train kept out of training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from harness.data import ImageFolderDataset
from harness.data.loading import SeededDraws, loader_options
from harness.eval.features import checkpoint_id, eval_backbone, extract, run_features
from harness.eval.sweep import autocast, epochs_of, top1_scorer, train_sweep
from harness.eval.transforms import eval_transform, train_transform
from harness.io import save_torch


def base_lrs(cfg: dict) -> list[float]:
    """The base learning rates swept for the run's base method (``linear.base_lrs``, by base;
    "default" for a base it does not name), as SER's config/eval.yaml lists them per
    checkpoint: MoCo-v3 3 and 10, Barlow Twins 1 and 3."""
    lrs = cfg["linear"]["base_lrs"]
    return list(lrs.get(cfg.get("base") or "", lrs["default"]))


def heldout_split(targets, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices): a seeded ``share`` of every class's images
    (at least one, never all) held out to select on; both lists ascending."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(targets):
        by_class.setdefault(int(y), []).append(i)
    g = torch.Generator().manual_seed(seed)
    held: list[int] = []
    for _, idx in sorted(by_class.items()):
        n = min(max(1, round(share * len(idx))), len(idx) - 1)
        order = torch.randperm(len(idx), generator=g)[:n]
        held += [idx[j] for j in order.tolist()]
    held_set = set(held)
    return [i for i in range(len(targets)) if i not in held_set], sorted(held)


def _head_path(run_dir: Path, cfg: dict) -> Path:
    lc = cfg["linear"]
    key = json.dumps(
        [checkpoint_id(Path(run_dir) / "checkpoint.pt"), lc, cfg["seed"], base_lrs(cfg)],
        sort_keys=True,
    )
    return Path(run_dir) / "eval" / f"linear-head-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"


def imagenet_probe(
    run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False
) -> tuple[nn.Linear, dict]:
    """The run's selected ImageNet linear head and its selection record (``sweep.train_sweep``:
    ``lr``, ``epoch``, ``top1`` on the selection split, ``per_lr``, plus ``select_on``),
    trained once and stored beside the run; every column read with the ImageNet head (val,
    V2, Sketch, R, C, P) reads this one. Keyed by checkpoint, probe settings, seed and the
    learning rates of the run's base."""
    path = _head_path(run_dir, cfg)
    saved = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else {}
    if "selection" in saved:
        head = nn.Linear(*saved["shape"])
        head.load_state_dict(saved["state"])
        return head.eval(), saved["selection"]
    lc = cfg["linear"]
    fit = _fit_augmented if lc["augment"] else _fit_cached
    head, record = fit(run_dir, data_root, cfg, quiet)
    record["select_on"] = lc["select_on"]
    save_torch(
        path,
        {
            "shape": (head.in_features, head.out_features),
            "state": head.state_dict(),
            "selection": record,
        },
    )
    return head, record


def imagenet_head(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False) -> nn.Linear:
    """The run's selected ImageNet linear head (``imagenet_probe`` without its record)."""
    return imagenet_probe(run_dir, data_root, cfg, quiet)[0]


def _fit_cached(run_dir: Path, data_root: Path, cfg: dict, quiet: bool):
    """Small presets: the sweep on the cached features the k-NN and MLP probes share
    (extracted once in fp32; the heads run at ``linear.precision``)."""
    lc = cfg["linear"]
    tr, va = run_features(run_dir, data_root, cfg, quiet)
    x, y = tr["cls"], tr["labels"]
    if lc["select_on"] == "val":
        sx, sy = va["cls"], va["labels"]
    else:
        keep, held = heldout_split(y.tolist(), lc["heldout"], cfg["seed"])
        sx, sy = x[held], y[held]
        x, y = x[keep], y[keep]
    return train_sweep(
        epochs_of(x, y, lc["batch_size"], cfg["seed"]),
        x.shape[1],
        va["n_classes"],
        lc["epochs"],
        lc["batch_size"],
        base_lrs(cfg),
        lc["select_from"],
        top1_scorer(sx, sy, lc["batch_size"]),
        seed=cfg["seed"],
        precision=lc["precision"],
        quiet=quiet,
    )


def _fit_augmented(run_dir: Path, data_root: Path, cfg: dict, quiet: bool):
    """The paper recipe: fresh augmented features every epoch (GPU-scale), one backbone pass
    per batch feeding every head; each image's draw is its own (SeededDraws), whatever the
    number of loader workers. The selection split's features (eval transform) are extracted
    once, at ``linear.precision`` as SER's validation pass runs."""
    lc, seed, runtime = cfg["linear"], cfg["seed"], cfg.get("runtime")
    backbone, device = eval_backbone(run_dir)
    size = cfg["model"]["img_size"]
    train = ImageFolderDataset(data_root, "train", transform=train_transform(size))
    n_classes = len(train.classes)
    tf = eval_transform(size, lc["resize"])
    if lc["select_on"] == "val":
        select = ImageFolderDataset(data_root, "val", transform=tf)
    else:
        keep, held = heldout_split(train.targets, lc["heldout"], seed)
        select = Subset(ImageFolderDataset(data_root, "train", transform=tf), held)
        train = Subset(train, keep)
    with autocast(device, lc["precision"]):
        sx, sy = extract(
            backbone,
            select,
            lc["n_last"],
            lc["batch_size"],
            device,
            "selection features",
            quiet,
            runtime=runtime,
        )
    g = torch.Generator().manual_seed(seed)
    draws = SeededDraws(train, seed)
    loader = DataLoader(
        draws,
        batch_size=lc["batch_size"],
        shuffle=True,
        generator=g,
        drop_last=False,
        **loader_options(runtime, device),
    )

    def batches(epoch):
        draws.set_epoch(epoch)
        for x, y in loader:
            with torch.no_grad(), autocast(device, lc["precision"]):
                f = backbone.features(x.to(device), n_last=lc["n_last"])
            yield f, y.to(device)

    return train_sweep(
        batches,
        backbone.width * lc["n_last"],
        n_classes,
        lc["epochs"],
        lc["batch_size"],
        base_lrs(cfg),
        lc["select_from"],
        top1_scorer(sx, sy, lc["batch_size"]),
        seed=seed,
        device=device,
        precision=lc["precision"],
        quiet=quiet,
    )


def head_and_backbone(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False):
    """What every column read with the ImageNet head needs: the head, the frozen backbone, its
    device and ImageNet's class list (the head's label space)."""
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    backbone, device = eval_backbone(run_dir)
    return head, backbone, device, ImageFolderDataset(data_root, "train").classes


def selection_effect() -> str:
    """``linear.select_on``: selecting on the reported split (SER's) against a held-out share
    of train, on fixed features; the gap is how much selecting on val flatters val."""
    from harness.eval.sweep import clusters

    x, y = clusters(512)
    vx, vy = clusters(256, seed=1)
    keep, held = heldout_split(y.tolist(), 0.1, 0)
    lrs = [0.03, 0.3, 3.0, 30.0]
    picks = {}
    for name, (tx, ty, sx, sy) in {
        "val": (x, y, vx, vy),
        "heldout": (x[keep], y[keep], x[held], y[held]),
    }.items():
        head, rec = train_sweep(
            epochs_of(tx, ty, 128), 32, 10, 10, 128, lrs, 5, top1_scorer(sx, sy)
        )
        with torch.no_grad():
            picks[name] = (rec, top1_scorer(vx, vy)(head))
    (rv, av), (rh, ah) = picks["val"], picks["heldout"]
    return (
        f"val picks base lr {rv['lr']:g} epoch {rv['epoch']} (val top-1 {av:.2f}), held-out "
        f"10 % picks lr {rh['lr']:g} epoch {rh['epoch']} (val top-1 {ah:.2f}): "
        f"{av - ah:+.2f} points (lrs {'/'.join(f'{v:g}' for v in lrs)}, epochs 6–10, "
        f"10 Gaussian classes, fixed features)"
    )
