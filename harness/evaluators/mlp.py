"""3-layer MLP probe on frozen features (spec/evals.md §7.3, SIE's ``--deep-end`` head), and
the small head-training loop the other feature probes (transformation probe, 3DIEBench) share.

Recipe: Linear(d, 1024) → ReLU → Linear(1024, 1024) → ReLU → Linear(1024, out); Adam lr 1e-3,
wd 0, batch 256, 300 epochs, constant LR. On ImageNet the features are the cached
concatenated [CLS] of the last n blocks, not re-augmented each epoch (see run_mlp_probe).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from harness.evaluators.linear import topk

MLP_RECIPE = {"epochs": 300, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0,
              "hidden": 1024, "schedule": "constant", "standardize": True}


def mlp_head(d: int, out: int, hidden: int = 1024) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


def make_head(kind: str, d: int, out: int, hidden: int = 1024) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d, out)
    if kind == "mlp":
        return mlp_head(d, out, hidden)
    raise ValueError(f"unknown head '{kind}': linear or mlp")


def shuffled(x: torch.Tensor, y: torch.Tensor, batch_size: int,
             g: torch.Generator) -> Callable[[], Iterable]:
    """One epoch of (x, y) mini-batches in a fresh order drawn from ``g``."""
    def epoch():
        order = torch.randperm(len(x), generator=g).to(x.device)
        for idx in order.split(batch_size):
            yield x[idx], y[idx]
    return epoch


def train_head(head: nn.Module, epoch_batches: Callable[[], Iterable], epochs: int,
               lr: float, weight_decay: float = 0.0, loss: str = "ce",
               schedule: str = "constant", desc: str = "head", quiet: bool = True) -> nn.Module:
    """Adam on a head over frozen inputs; ``schedule`` is constant (SIE) or cosine per epoch."""
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = F.cross_entropy if loss == "ce" else F.mse_loss
    head.train()
    for epoch in tqdm(range(epochs), desc=desc, disable=quiet, leave=False):
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))
        for x, y in epoch_batches():
            l = loss_fn(head(x), y)
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def predict(head: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    return torch.cat([head(part) for part in x.split(batch_size)])


class Standardize(nn.Module):
    """Fixed per-feature standardisation with the training set's statistics (MAE's probe
    puts a BatchNorm without affine there). Adam at lr 1e-3 barely moves on raw [CLS] features
    of small scale: at the tiny preset the raw MLP probe stayed 6-8 points under the linear
    probe, which SGD at a large lr reaches; standardised, it matches it."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_mlp(train_x, train_y, n_classes: int, epochs: int = 300, batch_size: int = 256,
            lr: float = 1e-3, weight_decay: float = 0.0, hidden: int = 1024,
            schedule: str = "constant", seed: int = 0, quiet: bool = True,
            standardize: bool = True) -> nn.Module:
    """The §7.3 probe trained on (train_x, train_y), on their device."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    head = mlp_head(train_x.shape[1], n_classes, hidden)
    if standardize:
        head = nn.Sequential(Standardize(train_x), head)
    head = head.to(train_x.device)
    return train_head(head, shuffled(train_x, train_y, batch_size, g), epochs, lr,
                      weight_decay, "ce", schedule, "mlp", quiet)


def mlp_probe(train_x, train_y, test_x, test_y, n_classes: int, seed: int = 0,
              quiet: bool = True, **recipe) -> dict:
    """{"top1", "top5"} in percent of the §7.3 MLP probe; ``recipe`` overrides MLP_RECIPE."""
    r = {**MLP_RECIPE, **recipe}
    head = fit_mlp(train_x, train_y, n_classes, r["epochs"], r["batch_size"], r["lr"],
                   r["weight_decay"], r["hidden"], r["schedule"], seed, quiet, r["standardize"])
    return topk(predict(head, test_x).cpu(), test_y.cpu())


def run_mlp_probe(run_dir: Path, data_root: Path, cfg: dict, quiet: bool = False) -> dict:
    """Evaluator: {"mlp_top1", "mlp_top5"} on the cached linear-probe features."""
    from harness.evaluators.features import run_features

    opts = {**MLP_RECIPE, **cfg.get("mlp", {})}
    tr, va = run_features(run_dir, data_root, cfg, quiet=quiet)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = mlp_probe(tr["cls"].to(device), tr["labels"].to(device), va["cls"].to(device),
                  va["labels"], tr["n_classes"], seed=cfg.get("seed", 0), quiet=quiet,
                  **{k: opts[k] for k in MLP_RECIPE})
    return {f"mlp_{k}": v for k, v in m.items()}
