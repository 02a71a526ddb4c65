"""Per-layer transformation-prediction probe (Table 5; spec/evals.md §8, [design]).

Every image is shown in all four 90° rotations (label k, torch.rot90 k times on H×W) and
both horizontal flips (label 0/1), so the tasks are balanced (chance 25 % and 50 %). A
head is trained on frozen features of layers 1, 3, 6, 9, 12: the mean patch token after a
LayerNorm (features.pooled_tokens). Features are standardised with training statistics so
one learning rate suits every layer. Absolute positional embeddings make orientation
decodable even without training, so the same probe on a randomly initialised network of
the same shape is reported as the floor.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from harness.config.evaluations import EVALUATIONS
from harness.data import ImageFolderDataset
from harness.eval.features import cached_features, checkpoint_id, eval_backbone
from harness.eval.heads import make_head, predict, shuffled, train_head
from harness.eval.transforms import eval_transform
from harness.model.backbone import Backbone
from harness.model.group import D4

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


LAYERS = tuple(EVALUATIONS["transform_probe"]["layers"])
TASKS = {"rotation": [D4(0, k) for k in range(4)], "hflip": [D4(0, 0), D4(1, 0)]}
# The probe proper; the rest of the section says what it is run on.
PROBE_RECIPE = {
    k: EVALUATIONS["transform_probe"][k] for k in ("head", "epochs", "batch_size", "lr", "seeds")
}


class Transformed(Dataset):
    """``dataset`` with a D4 element applied to every (C×H×W tensor) image."""

    def __init__(self, dataset: Dataset, d: D4):
        self.dataset, self.d = dataset, d

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return self.d.apply(x), y


def _stack(per_label: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat(list(per_label)).float()
    y = torch.cat([torch.full((len(f),), c, dtype=torch.long) for c, f in enumerate(per_label)])
    return x, y


def task_accuracy(
    train: Sequence[torch.Tensor],
    test: Sequence[torch.Tensor],
    head: str = "linear",
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    seeds: int = 3,
    device="cpu",
    quiet: bool = True,
) -> tuple[float, float]:
    """(mean, std) over ``seeds`` of the test accuracy in percent; ``train[c]`` / ``test[c]``
    hold the features of the images under transformation c, whose label is c."""
    tx, ty = _stack(train)
    vx, vy = _stack(test)
    mu, sd = tx.mean(0), tx.std(0).clamp_min(1e-6)
    tx, vx = ((t - mu) / sd for t in (tx, vx))
    tx, ty, vx = tx.to(device), ty.to(device), vx.to(device)
    accs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = make_head(head, tx.shape[1], len(train)).to(device)
        g = torch.Generator().manual_seed(seed)
        train_head(
            model,
            shuffled(tx, ty, batch_size, g),
            epochs,
            lr,
            schedule="cosine",
            desc="transform probe",
            quiet=quiet,
        )
        pred = predict(model, vx).argmax(1).cpu()
        accs.append(100.0 * (pred == vy).float().mean().item())
    return statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def probe_layers(feats: dict, layers, quiet: bool = True, device="cpu", **recipe) -> dict:
    """``feats[split][D4 element][layer]`` → {"layer<l>/<task>_pred_acc" (+ "_std")}."""
    r = {**PROBE_RECIPE, **recipe}
    out = {}
    for layer in layers:
        for task, elements in TASKS.items():
            train = [feats["train"][d][layer] for d in elements]
            test = [feats["val"][d][layer] for d in elements]
            mean, std = task_accuracy(
                train,
                test,
                r["head"],
                r["epochs"],
                r["batch_size"],
                r["lr"],
                r["seeds"],
                device,
                quiet,
            )
            out[f"layer{layer}/{task}_pred_acc"] = mean
            out[f"layer{layer}/{task}_pred_acc_std"] = std
    return out


def _per_class(dataset, n: int) -> list[int]:
    """The first ``n`` images of every class (an ImageFolder's ``targets``)."""
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(dataset.targets):
        if seen.get(y, 0) < n:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return keep


def run_transform_probe(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: the probe on the trained encoder and, under ``random_init/``, on a freshly
    initialised one (the floor). Train on ``per_class`` train images per class, test on val."""
    from torch.utils.data import Subset

    opts = cfg["transform_probe"]
    trained, device = eval_backbone(run_dir)
    layers = [l for l in opts["layers"] if l <= len(trained.blocks)]
    tf = eval_transform(cfg["model"]["img_size"], cfg["linear"]["resize"])
    train = ImageFolderDataset(data_root, "train", transform=tf)
    data = {
        "train": Subset(train, _per_class(train, opts["per_class"])),
        "val": ImageFolderDataset(data_root, "val", transform=tf),
    }
    root = str(Path(data_root).resolve())
    data_ids = {"train": f"{root}:first {opts['per_class']} per class", "val": root}
    models = {"": (trained, checkpoint_id(Path(run_dir) / "checkpoint.pt"))}
    if opts["floor"]:
        torch.manual_seed(cfg.get("seed", 0))
        models["random_init/"] = (
            Backbone(trained.cfg).to(device).eval(),
            f"random-init:{trained.cfg}:{cfg.get('seed', 0)}",
        )
    recipe = {k: opts[k] for k in PROBE_RECIPE}
    out = {}
    for prefix, (backbone, model_id) in models.items():
        feats = {split: {} for split in data}
        for split, ds in data.items():
            for d in {d for elements in TASKS.values() for d in elements}:
                f = cached_features(
                    backbone,
                    Transformed(ds, d),
                    Path(run_dir) / "features",
                    model_id=model_id,
                    dataset_id=data_ids[split],
                    split=split,
                    layers=layers,
                    transform=f"{tf!r}|{d}",
                    batch_size=opts["extract_batch"],
                    device=device,
                    quiet=quiet,
                    runtime=cfg.get("runtime"),
                )
                feats[split][d] = f["layers"]
        scores = probe_layers(feats, layers, quiet, device, **recipe)
        out.update({prefix + k: v for k, v in scores.items()})
    return out
