"""Linear probe (spec/evals.md §7.1): frozen backbone, concatenated final-LayerNorm [CLS] of
the last n blocks, one Linear(N(0, 0.01), bias 0), SGD m 0.9 wd 0, lr = base·B/256, cosine
per epoch; top-1/top-5 on val after the last epoch.

With ``augment`` (paper preset) features are recomputed every epoch under RandomResizedCrop +
flip, as the recipe does; without it (tiny/micro) they are extracted once and cached, which
at that scale changes nothing but the time it takes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm import tqdm

from harness.data import ImageFolderDataset
from harness.augment import BICUBIC, MEAN, STD


def eval_transform(img_size: int, resize: int) -> T.Compose:
    return T.Compose([T.Resize(resize, interpolation=BICUBIC), T.CenterCrop(img_size),
                      T.ToTensor(), T.Normalize(MEAN, STD)])


def train_transform(img_size: int) -> T.Compose:
    return T.Compose([T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(MEAN, STD)])


@torch.no_grad()
def extract(backbone, dataset, n_last: int, batch_size: int, device, desc: str, quiet=False):
    feats, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for x, y in tqdm(loader, desc=desc, disable=quiet, leave=False):
        feats.append(backbone.features(x.to(device), n_last=n_last).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def topk(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    k = min(max(ks), logits.shape[1])
    pred = logits.topk(k, dim=1).indices
    hit = pred == y[:, None]
    return {f"top{kk}": 100.0 * hit[:, :min(kk, k)].any(1).float().mean().item() for kk in ks}


def _train_head(epoch_batches, d: int, n_classes: int, epochs: int, batch_size: int,
                base_lr: float, g: torch.Generator, device="cpu", quiet=False) -> nn.Linear:
    """The probe recipe: Linear(N(0, 0.01), 0), SGD m 0.9 wd 0, lr·B/256, cosine per epoch.

    ``epoch_batches()`` yields (features, labels) for one epoch.
    """
    head = nn.Linear(d, n_classes)
    nn.init.normal_(head.weight, std=0.01, generator=g)
    nn.init.zeros_(head.bias)
    head = head.to(device)
    opt = torch.optim.SGD(head.parameters(), lr=base_lr * batch_size / 256, momentum=0.9,
                          weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    for _ in tqdm(range(epochs), desc="linear", disable=quiet, leave=False):
        for x, y in epoch_batches():
            loss = nn.functional.cross_entropy(head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return head.cpu()


def fit_linear(train_x, train_y, n_classes: int, epochs: int, batch_size: int, base_lr: float,
               seed: int = 0, quiet=False) -> nn.Linear:
    """The probe on cached features."""
    g = torch.Generator().manual_seed(seed)

    def batches():
        for idx in torch.randperm(len(train_x), generator=g).split(batch_size):
            yield train_x[idx], train_y[idx]

    return _train_head(batches, train_x.shape[1], n_classes, epochs, batch_size, base_lr, g,
                       quiet=quiet)


def imagenet_head(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False) -> nn.Linear:
    """The ImageNet linear head of a run, trained once and reused by every transfer column
    (V2, Sketch, R read it as the paper does). Keyed by checkpoint and probe settings."""
    from harness.evaluators.features import checkpoint_id, run_features
    from harness.io import save_torch
    from harness.train import load_trained

    lc = cfg["linear"]
    key = json.dumps([checkpoint_id(Path(run_dir) / "checkpoint.pt"), lc, cfg["seed"]], sort_keys=True)
    path = Path(run_dir) / "eval" / f"linear-head-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        head = nn.Linear(*saved["shape"])
        head.load_state_dict(saved["state"])
        return head
    if lc["augment"]:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        backbone = load_trained(run_dir, device).eval_backbone().to(device).eval()
        train = ImageFolderDataset(data_root, "train", transform=train_transform(cfg["model"]["img_size"]))
        head = _fit_augmented(backbone, train, len(train.classes), lc, cfg["seed"], device, quiet)
    else:
        # Cached features, shared with the k-NN and MLP probes of the same checkpoint.
        tr, va = run_features(run_dir, data_root, cfg, quiet)
        head = fit_linear(tr["cls"], tr["labels"], va["n_classes"], lc["epochs"],
                          lc["batch_size"], lc["base_lr"], cfg["seed"], quiet=quiet)
    save_torch(path, {"shape": (head.in_features, head.out_features), "state": head.state_dict()})
    return head


def linear_probe(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False,
                 dataset: str = "imagenet", dataset_root: Path | None = None) -> dict:
    """ImageNet top-1/top-5 of the linear head; other datasets go to ``transfer``."""
    if dataset != "imagenet":
        from harness.evaluators.transfer import TRANSFER

        return TRANSFER[dataset](run_dir, data_root, cfg, dataset_root, quiet)
    from harness.train import load_trained

    lc = cfg["linear"]
    head = imagenet_head(run_dir, data_root, cfg, quiet)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = load_trained(run_dir, device).eval_backbone().to(device).eval()
    val = ImageFolderDataset(data_root, "val", transform=eval_transform(cfg["model"]["img_size"], lc["resize"]))
    vx, vy = extract(backbone, val, lc["n_last"], lc["batch_size"], device, "val features", quiet)
    with torch.no_grad():
        metrics = topk(head(vx.cpu()), vy)
    metrics["n_val"] = len(val)
    return metrics


def _fit_augmented(backbone, train, n_classes, lc, seed, device, quiet) -> nn.Linear:
    """The paper recipe: fresh augmented features every epoch (GPU-scale)."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=lc["batch_size"], shuffle=True, generator=g,
                        num_workers=lc.get("workers", 8), drop_last=False)

    def batches():
        for x, y in loader:
            with torch.no_grad():
                yield backbone.features(x.to(device), n_last=lc["n_last"]).float(), y.to(device)

    return _train_head(batches, backbone.width * lc["n_last"], n_classes, lc["epochs"],
                       lc["batch_size"], lc["base_lr"], g, device, quiet)
