"""Frozen features, extracted once and cached on disk.

The linear probe, k-NN and the MLP probe all read the same frozen [CLS] features of the same
checkpoint; the backbone forward is by far the expensive part, so it runs once per
(checkpoint, data, transform, what is extracted) and the result is a .pt file written
atomically (harness.io), so concurrent evaluation jobs never read half a file.

A checkpoint is identified by its resolved path, size and mtime rather than a content hash:
hashing a multi-GB checkpoint costs about as much as some of the probes, and a run only
rewrites its checkpoint while pretraining.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from harness.config import load_trained
from harness.data import ImageFolderDataset
from harness.data.loading import loader_options
from harness.eval.transforms import eval_transform
from harness.io import save_torch


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def eval_backbone(run_dir: Path, on: torch.device | None = None):
    """The frozen encoder a finished run is evaluated with, in eval mode, and its device."""
    on = on or device()
    return load_trained(run_dir, on).eval_backbone().to(on).eval(), on


@torch.no_grad()
def extract(
    backbone,
    dataset,
    n_last: int,
    batch_size: int,
    device,
    desc: str,
    quiet=False,
    runtime: dict | None = None,
):
    """N×(n_last·D) final-LN [CLS] features and N labels, in the dataset's order, loaded with
    the job's ``runtime`` workers (``harness.data.loading.loader_options``)."""
    feats, labels = [], []
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, **loader_options(runtime, device)
    )
    for x, y in tqdm(loader, desc=desc, disable=quiet, leave=False):
        feats.append(backbone.features(x.to(device), n_last=n_last).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def checkpoint_id(path) -> str:
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def pooled_tokens(backbone, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Mean patch token after a LayerNorm (spec/evals.md §8): ``norm_equiv`` at SER's
    equivariance layer (already applied by the backbone's tap), the final norm elsewhere."""
    t = tokens.flatten(2).transpose(1, 2)  # B×hw×D
    if layer != backbone.cfg.equiv_layer or backbone.norm_equiv is None:
        t = backbone.vit.norm(t)
    return t.mean(1)


@torch.no_grad()
def extract_features(
    backbone,
    dataset,
    layers=(),
    n_last: int = 1,
    batch_size: int = 256,
    device="cpu",
    quiet: bool = False,
    desc: str = "features",
    runtime: dict | None = None,
) -> dict:
    """{"cls": N×(n_last·D) concatenated final-LN [CLS] (last block last), "labels": N,
    "layers": {layer: N×D pooled tokens}} on the CPU; loaded with the job's ``runtime``
    workers."""
    layers = tuple(sorted(set(layers)))
    cls, labels, pooled = [], [], {l: [] for l in layers}
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, **loader_options(runtime, device)
    )
    for x, y in tqdm(loader, desc=desc, disable=quiet, leave=False):
        out = backbone(x.to(device), taps=layers, n_last=n_last)
        cls.append(out.cls.float().cpu())
        labels.append(torch.as_tensor(y))
        for l in layers:
            pooled[l].append(pooled_tokens(backbone, out.tokens[l], l).float().cpu())
    return {
        "cls": torch.cat(cls),
        "labels": torch.cat(labels).long(),
        "layers": {l: torch.cat(v) for l, v in pooled.items()},
    }


def feature_key(
    model_id: str, dataset_id: str, split: str, layers, n_last: int, transform: str
) -> str:
    desc = {
        "model": model_id,
        "data": dataset_id,
        "split": split,
        "layers": sorted(set(layers)),
        "n_last": n_last,
        "transform": transform,
    }
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def cached_features(
    backbone,
    dataset,
    cache_dir,
    *,
    model_id: str,
    dataset_id: str,
    split: str,
    layers=(),
    n_last: int = 1,
    transform: str | None = None,
    batch_size: int = 256,
    device="cpu",
    quiet: bool = False,
    runtime: dict | None = None,
) -> dict:
    """``extract_features``, read from ``cache_dir`` when this exact extraction was done before.

    ``transform`` names the preprocessing; by default the dataset's own ``transform`` repr,
    which spells out every torchvision parameter.
    """
    if transform is None:
        transform = repr(getattr(dataset, "transform", None))
    key = feature_key(model_id, f"{dataset_id}:{len(dataset)}", split, layers, n_last, transform)
    path = Path(cache_dir) / f"{split}-{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    feats = extract_features(
        backbone,
        dataset,
        layers,
        n_last,
        batch_size,
        device,
        quiet,
        desc=f"{split} features",
        runtime=runtime,
    )
    save_torch(path, feats)
    return feats


def run_features(
    run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False, layers=()
) -> tuple[dict, dict]:
    """Train and val features of a finished run at the linear probe's n_last and eval
    transform: the extraction the linear probe, k-NN and MLP probe share. Each dict also
    carries ``n_classes``."""
    lc = cfg["linear"]
    backbone, device = eval_backbone(run_dir)
    tf = eval_transform(cfg["model"]["img_size"], lc["resize"])
    model_id = checkpoint_id(Path(run_dir) / "checkpoint.pt")
    out = []
    for split in ("train", "val"):
        ds = ImageFolderDataset(data_root, split, transform=tf)
        f = cached_features(
            backbone,
            ds,
            Path(run_dir) / "features",
            model_id=model_id,
            dataset_id=str(Path(data_root).resolve()),
            split=split,
            layers=layers,
            n_last=lc["n_last"],
            batch_size=lc["batch_size"],
            device=device,
            quiet=quiet,
            runtime=cfg.get("runtime"),
        )
        f["n_classes"] = len(ds.classes)
        out.append(f)
    return out[0], out[1]
