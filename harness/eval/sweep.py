"""The linear probe's sweep and selection on tensors (spec/evals.md §7.1), as SER's
``lincls_parallel.py`` with ``run_eval.sh`` and ``config/eval.yaml`` run it
(aitrics-chris/SER@dbe5e93): one linear head per base learning rate, every head fed the same
batches (the script's one loader feeds one thread per head), each Linear(N(0, 0.01), 0) drawn
from the same seed (``fix_random_seeds`` before each head), SGD m 0.9 wd 0 at lr = base·B/256,
cosine over the epochs stepped per epoch; after each epoch index ``e >= select_from``
(``--val_epoch 40`` of 50: epochs 41–50) every head is scored, a head's best is replaced only
by a strictly higher top-1 (``acc1 > best_acc1``), and the head reported is the best (head,
epoch) over all heads, the first learning rate of the list on a tie.

``precision="fp16"`` runs each head's forward and loss under fp16 autocast without a gradient
scaler, as the script does (its ``GradScaler`` is built and left unused). The bottom of
``harness.eval`` above ``heads``: no data, no backbones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from harness.eval.heads import shuffled


def autocast(device, precision: str):
    """fp16 autocast on ``device``'s type for "fp16", a no-op context for "fp32"."""
    return torch.autocast(
        torch.device(device).type, dtype=torch.float16, enabled=precision == "fp16"
    )


def probe_head(d: int, n_classes: int, seed: int) -> nn.Linear:
    """SER's ``LinearClassifier``: weight N(0, 0.01), bias 0, drawn after seeding with ``seed``."""
    head = nn.Linear(d, n_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=g)
        head.bias.zero_()
    return head


def train_sweep(
    epoch_batches: Callable[[int], Iterable],
    d: int,
    n_classes: int,
    epochs: int,
    batch_size: int,
    base_lrs: Sequence[float],
    select_from: int,
    score: Callable[[nn.Module], float],
    seed: int = 0,
    device="cpu",
    precision: str = "fp32",
    quiet: bool = True,
) -> tuple[nn.Linear, dict]:
    """(the selected head on the CPU, the selection record).

    ``epoch_batches(epoch)`` yields (features, labels) for one epoch: it is called once per
    epoch whatever the number of heads. ``score(head)`` is the selection split's top-1 of a
    head in eval mode. The record holds the selected ``lr`` (base), 1-based ``epoch``, its
    ``top1`` and, per base lr, the best epoch and top-1 (``per_lr``).
    """
    if not base_lrs:
        raise ValueError("the sweep needs at least one learning rate")
    heads = [probe_head(d, n_classes, seed).to(device) for _ in base_lrs]
    opts = [
        torch.optim.SGD(h.parameters(), lr=b * batch_size / 256, momentum=0.9, weight_decay=0.0)
        for h, b in zip(heads, base_lrs)
    ]
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs, eta_min=0) for o in opts]
    best: list[dict | None] = [None] * len(heads)
    for epoch in tqdm(range(epochs), desc="linear", disable=quiet, leave=False):
        for h in heads:
            h.train()
        for x, y in epoch_batches(epoch):
            for h, o in zip(heads, opts):
                with autocast(device, precision):
                    loss = nn.functional.cross_entropy(h(x), y)
                o.zero_grad()
                loss.backward()
                o.step()
        for s in scheds:
            s.step()
        if epoch < select_from:
            continue
        for i, h in enumerate(heads):
            h.eval()
            with torch.no_grad(), autocast(device, precision):
                top1 = float(score(h))
            if best[i] is None or top1 > best[i]["top1"]:
                best[i] = {
                    "epoch": epoch + 1,
                    "top1": top1,
                    "state": copy.deepcopy({k: v.cpu() for k, v in h.state_dict().items()}),
                }
    pick = 0
    for i, b in enumerate(best):
        if b["top1"] > best[pick]["top1"]:
            pick = i
    head = nn.Linear(d, n_classes)
    head.load_state_dict(best[pick]["state"])
    record = {
        "lr": float(base_lrs[pick]),
        "epoch": best[pick]["epoch"],
        "top1": best[pick]["top1"],
        "per_lr": [
            {"lr": float(b), "epoch": r["epoch"], "top1": r["top1"]} for b, r in zip(base_lrs, best)
        ],
    }
    return head.eval(), record


def top1_scorer(x: torch.Tensor, y: torch.Tensor, batch: int = 4096):
    """``score`` for ``train_sweep``: a head's top-1 (percent) on fixed features, in chunks
    on the head's device, as SER's ``validate`` counts it."""

    def score(head: nn.Module) -> float:
        dev = next(head.parameters()).device
        hits = sum(
            (head(xs.to(dev)).argmax(1).cpu() == ys).sum().item()
            for xs, ys in zip(x.split(batch), y.split(batch))
        )
        return 100.0 * hits / len(y)

    return score


def epochs_of(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0):
    """``epoch_batches`` for ``train_sweep`` over cached features: a fresh seeded order each
    epoch (``heads.shuffled``)."""
    epoch = shuffled(x, y, batch_size, torch.Generator().manual_seed(seed))
    return lambda _: epoch()


def fit_linear(
    train_x,
    train_y,
    n_classes: int,
    epochs: int,
    batch_size: int,
    base_lr: float,
    seed=0,
    quiet=True,
) -> nn.Linear:
    """One head at one lr on cached features, the last epoch's: the sweep of one learning
    rate scored only after its last epoch."""
    head, _ = train_sweep(
        epochs_of(train_x, train_y, batch_size, seed),
        train_x.shape[1],
        n_classes,
        epochs,
        batch_size,
        [base_lr],
        epochs - 1,
        lambda h: 0.0,
        seed=seed,
        quiet=quiet,
    )
    return head


def clusters(n: int, d: int = 32, classes: int = 10, seed: int = 0):
    """Fixed features for the measures: ``classes`` Gaussian clusters, overlapping so that
    the probe's settings move its accuracy."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    y = torch.arange(n) % classes
    return centres[y] * 0.35 + torch.randn(n, d, generator=g), y


def precision_effect() -> str:
    """``linear.precision``: fp16 autocast (SER's) against fp32, same data, seed and lr."""
    x, y = clusters(1024)
    vx, vy = clusters(512, seed=1)
    out = {}
    for p in ("fp16", "fp32"):
        out[p] = train_sweep(
            epochs_of(x, y, 256), 32, 10, 10, 256, [3.0], 9, lambda h: 0.0, precision=p
        )[0]
    w16, w32 = out["fp16"].weight, out["fp32"].weight
    rel = ((w16 - w32).norm() / w32.norm()).item()
    with torch.no_grad():
        a16, a32 = (top1_scorer(vx, vy)(out[p]) for p in ("fp16", "fp32"))
    return (
        f"fp16 vs fp32 head weights differ by {100 * rel:.2g} % (relative L2); val top-1 "
        f"{a16:.2f} vs {a32:.2f} ({a16 - a32:+.2f} points; 10 Gaussian classes, 1024 training "
        f"features of width 32, 10 epochs at base lr 3)"
    )
