"""3DIEBench probes on frozen features (spec/evals.md §4.2–4.3, SIE's evaluation scripts).

Inputs are tensors so the probes do not depend on how the dataset is read: per object, the
features of V views (N×V×D) and the object's class.

* Classification: each epoch every object contributes one random view; Adam 1e-3, wd 0,
  batch 256, constant LR, linear or 3-layer MLP head; top-1/top-5 over every val view given
  (N×V: the evaluator passes one seeded random view per object, V = 1, as SIE validates, or
  all of them, the expectation of that number; ``iebench.val_views``).
"""

from __future__ import annotations

import torch

from harness.config.evaluations import EVALUATIONS
from harness.eval.heads import make_head, predict, train_head
from harness.eval.metrics import topk

PROBE_RECIPE = EVALUATIONS["iebench"]


def classify_objects(
    train_feats,
    train_labels,
    val_feats,
    val_labels,
    n_classes: int = 55,
    head: str = "linear",
    seed: int = 0,
    quiet: bool = True,
    **recipe,
) -> dict:
    """{"top1", "top5"} in percent. feats: N×V×D; labels: N."""
    r = {**PROBE_RECIPE, **recipe}
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, views, d = train_feats.shape
    rows = torch.arange(n)
    train_labels = train_labels.to(train_feats.device)

    def epoch():
        pick = train_feats[rows, torch.randint(views, (n,), generator=g)]
        for idx in torch.randperm(n, generator=g).split(r["batch_size"]):
            yield pick[idx], train_labels[idx]

    model = make_head(head, d, n_classes).to(train_feats.device)
    train_head(
        model, epoch, r["epochs"], r["lr"], r["weight_decay"], desc="3DIEBench class", quiet=quiet
    )
    logits = predict(model, val_feats.flatten(0, 1)).cpu()
    return topk(logits, val_labels.cpu().repeat_interleave(val_feats.shape[1]))
