"""3DIEBench's own 55-way linear probe over objects' views (spec/evals.md §4.2)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from harness.data.readers import IEBench3D
from harness.errors import HarnessError
from harness.eval.features import eval_backbone, extract
from harness.eval.iebench_probes import classify_objects
from harness.eval.transforms import eval_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


def _by_object(reader: IEBench3D, feats: torch.Tensor, labels: torch.Tensor):
    """N objects × V views × D, and one label per object."""
    rows = defaultdict(list)
    for i, (obj, k) in enumerate(reader.views):
        rows[obj].append((k, i))
    counts = {len(v) for v in rows.values()}
    if len(counts) != 1:
        raise HarnessError(
            f"3DIEBench objects under {reader.root} have different numbers of views "
            f"({sorted(counts)}): every object needs all its image_k.jpg"
        )
    order = [[i for _, i in sorted(v)] for _, v in sorted(rows.items())]
    idx = torch.tensor(order)
    return feats[idx], labels[idx[:, 0]]


def iebench_linear(
    run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False
) -> dict:
    lc = cfg["linear"]
    backbone, device = eval_backbone(run_dir)
    split = {}
    for name in ("train", "val"):
        reader = IEBench3D(
            root, name, transform=eval_transform(cfg["model"]["img_size"], lc["resize"])
        )
        x, y = extract(
            backbone,
            reader,
            lc["n_last"],
            lc["batch_size"],
            device,
            f"3DIEBench {name}",
            quiet,
            runtime=cfg.get("runtime"),
        )
        split[name] = _by_object(reader, x, y)
        n_classes = len(reader.classes)
    (tx, ty), (vx, vy) = split["train"], split["val"]
    return {
        **classify_objects(
            tx, ty, vx, vy, n_classes=n_classes, seed=cfg["seed"], quiet=quiet, **cfg["iebench"]
        ),
        "n_objects": len(vy),
    }
