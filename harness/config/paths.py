"""Where a run's data lives: the training set and each evaluation set, generated under the
results directory at the synthetic presets or read from the user's roots."""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError


def refuse_unused_data_root(preset: str, dataset: str, data_root) -> None:
    """Refused, not ignored: whoever passes --data-root means to train on that tree."""
    if data_root and dataset == "synthetic":
        raise HarnessError(
            f"--data-root {data_root}: preset '{preset}' trains on the synthetic set it "
            f"generates under the results folder; drop --data-root, or use --preset paper "
            f"to train on that ImageNet tree"
        )


def data_root(cfg: dict, results_dir: Path, data_root: str | None = None) -> Path:
    """Where the run's dataset lives: generated under the results dir, or given by the user."""
    d = cfg["data"]
    if d["dataset"] == "synthetic":
        refuse_unused_data_root(cfg["preset"], d["dataset"], data_root)
        tag = (
            f"synthetic-n{d['n_classes']}-s{d['size']}-{d['train_per_class']}x{d['val_per_class']}"
        )
        return Path(results_dir) / "data" / tag
    root = data_root or os.environ.get("HARNESS_DATA_" + d["dataset"].upper())
    if not root:
        raise HarnessError(
            f"preset '{cfg['preset']}' trains on {d['dataset']}: pass --data-root "
            f"PATH (an ImageFolder tree with train/ and val/) or set "
            f"HARNESS_DATA_{d['dataset'].upper()}"
        )
    return Path(root)


def dataset_root(cfg: dict, results_dir: Path, dataset: str, given: str | None = None) -> Path:
    """Where an evaluation set lives. Synthetic presets use fixture trees in the set's real
    layout, generated next to the synthetic training set; real ones read
    ``$HARNESS_DATA_<NAME>`` (e.g. HARNESS_DATA_IMAGENET_V2, HARNESS_DATA_3DIEBENCH,
    HARNESS_DATA_COCO: the folder holding annotations/, train2017/ and val2017/)."""
    if dataset in ("imagenet", "model"):  # "model": read from the run's config, no data
        return data_root(cfg, results_dir, given)
    d = cfg["data"]
    if d["dataset"] == "synthetic":
        from harness.data.fixtures import Config, write_fixtures

        # ImageNet-C corrupts every val image at each severity; the fixture keeps one in eight
        # (5 per class at tiny: enough points for Figure 5's t-SNE; 1 at micro, for speed).
        c_per_class = max(1, d["val_per_class"] // 8)
        tag = f"fixtures-n{d['n_classes']}-s{d['size']}" + (
            f"-c{c_per_class}" if c_per_class > 1 else ""
        )
        fx = Config(seed=0, n_classes=d["n_classes"], size=d["size"], c_per_class=c_per_class)
        if dataset == "coco":
            # The detection set's own sizes: the preset's detection.fixture.
            f = cfg["detection"]["fixture"]
            tag = f"fixtures-coco-s{f['size']}-{f['train']}x{f['val']}-o{f['objects']}"
            fx = Config(
                seed=0,
                coco_size=f["size"],
                coco_train=f["train"],
                coco_val=f["val"],
                coco_objects=f["objects"],
            )
        return write_fixtures(Path(results_dir) / "data" / tag, fx, only=[dataset])[dataset]
    var = "HARNESS_DATA_" + dataset.upper()
    if not os.environ.get(var):
        raise HarnessError(
            f"no {dataset} data for preset '{cfg['preset']}': set {var} to its root "
            f"(`harness data check {dataset} --root PATH` validates it)"
        )
    return Path(os.environ[var])


def ensure_data(cfg: dict, root: Path) -> None:
    d = cfg["data"]
    if d["dataset"] == "synthetic":
        from harness.data import generate

        generate(
            root,
            seed=0,
            n_classes=d["n_classes"],
            train_per_class=d["train_per_class"],
            val_per_class=d["val_per_class"],
            size=d["size"],
        )


def results_folder(path, source: str) -> Path:
    """The results folder ``path`` (named by ``source``: ``--results`` or ``HARNESS_RESULTS``),
    refused in one line when it, or a folder above it, is a file: every command would otherwise
    fail later, on its first write, with an OS error naming some file inside it."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            where = "is a file" if p == path else f"is under {p}, a file"
            raise HarnessError(
                f"{source}={path} {where}, not a folder: point it at a folder (or a path "
                "to create one)"
            )
    return path
