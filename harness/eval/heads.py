"""Heads trained on frozen inputs (tensors in, a trained head out): the Adam loop the MLP,
transformation and 3DIEBench probes share (§7.3); the linear probe's SGD sweep is
``harness.eval.sweep``. The bottom of ``harness.eval``: no data, no backbones."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


def mlp_head(d: int, out: int, hidden: int = 1024) -> nn.Sequential:
    """SIE's ``--deep-end`` head (facebookresearch/SIE@54541cf eval_classification.py,
    eval_angle_prediction.py ``Model``), PyTorch's default initialisation."""
    return nn.Sequential(
        nn.Linear(d, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out),
    )


def make_head(kind: str, d: int, out: int, hidden: int = 1024) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d, out)
    if kind == "mlp":
        return mlp_head(d, out, hidden)
    raise ValueError(f"unknown head '{kind}': linear or mlp")


def shuffled(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, g: torch.Generator
) -> Callable[[], Iterable]:
    """One epoch of (x, y) mini-batches in a fresh order drawn from ``g`` (on the CPU, so a
    seed gives the same order on every device)."""

    def epoch():
        order = torch.randperm(len(x), generator=g).to(x.device)
        for idx in order.split(batch_size):
            yield x[idx], y[idx]

    return epoch


SCHEDULES = ("constant", "cosine")


def train_head(
    head: nn.Module,
    epoch_batches: Callable[[], Iterable],
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    loss: str = "ce",
    schedule: str = "constant",
    desc: str = "head",
    quiet: bool = True,
) -> nn.Module:
    """Adam on a head over frozen inputs. ``schedule``: "constant", ``lr`` at every step as
    SIE's probes (facebookresearch/SIE@54541cf eval_classification.py,
    eval_angle_prediction.py: their ``adjust_learning_rate`` is never called), or "cosine"
    from ``lr`` towards 0, set once per epoch. ``epoch_batches()`` yields (x, y) for one
    epoch."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{schedule}': {' or '.join(SCHEDULES)}")
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
    """Fixed per-feature standardisation with the training set's statistics, the named
    alternative to SIE's raw features (``mlp.standardize`` / ``transform_probe.standardize``
    = true; MAE's probe puts a BatchNorm without affine there). SIE's heads see the raw
    backbone output (facebookresearch/SIE@54541cf eval_classification.py,
    eval_angle_prediction.py), which is the default. Why one may want it: Adam at lr 1e-3
    barely moves on raw [CLS] features of small scale; at the tiny preset the raw MLP probe
    stayed 6-8 points under the linear probe, standardised it matched it."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_mlp(
    train_x,
    train_y,
    n_classes: int,
    epochs: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    hidden: int = 1024,
    schedule: str = "constant",
    seed: int = 0,
    quiet: bool = True,
    standardize: bool = False,
) -> nn.Module:
    """The §7.3 probe trained on (train_x, train_y), on their device. ``standardize=False``
    (SIE's): the head's first Linear sees ``train_x`` as given; True puts a Standardize with
    ``train_x``'s statistics in front."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    head = mlp_head(train_x.shape[1], n_classes, hidden)
    if standardize:
        head = nn.Sequential(Standardize(train_x), head)
    head = head.to(train_x.device)
    return train_head(
        head,
        shuffled(train_x, train_y, batch_size, g),
        epochs,
        lr,
        weight_decay,
        "ce",
        schedule,
        "mlp",
        quiet,
    )
