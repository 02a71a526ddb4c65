"""3-layer MLP probe on frozen features (spec/evals.md §7.3, SIE's ``--deep-end`` head), and
the small head-training loop the other feature probes (transformation probe, 3DIEBench) share.

Recipe: Linear(d, 1024) → ReLU → Linear(1024, 1024) → ReLU → Linear(1024, out); Adam lr 1e-3,
wd 0, batch 256, 300 epochs, constant LR. On ImageNet the features are the cached
concatenated [CLS] of the last n blocks, not re-augmented each epoch (see run_mlp_probe).
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config.evaluations import EVALUATIONS
from harness.eval.features import run_features
from harness.eval.heads import fit_mlp, predict
from harness.eval.metrics import topk

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


# The §7.3 recipe (``harness.config.evaluations``), the defaults of direct calls.
MLP_RECIPE = EVALUATIONS["mlp"]


def mlp_probe(
    train_x, train_y, test_x, test_y, n_classes: int, seed: int = 0, quiet: bool = True, **recipe
) -> dict:
    """{"top1", "top5"} in percent of the §7.3 MLP probe; ``recipe`` overrides MLP_RECIPE."""
    r = {**MLP_RECIPE, **recipe}
    head = fit_mlp(
        train_x,
        train_y,
        n_classes,
        r["epochs"],
        r["batch_size"],
        r["lr"],
        r["weight_decay"],
        r["hidden"],
        r["schedule"],
        seed,
        quiet,
        r["standardize"],
    )
    return topk(predict(head, test_x).cpu(), test_y.cpu())


def run_mlp_probe(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: {"mlp_top1", "mlp_top5"} on the cached linear-probe features."""
    opts = cfg["mlp"]
    tr, va = run_features(run_dir, data_root, cfg, quiet=quiet)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = mlp_probe(
        tr["cls"].to(device),
        tr["labels"].to(device),
        va["cls"].to(device),
        va["labels"],
        tr["n_classes"],
        seed=cfg.get("seed", 0),
        quiet=quiet,
        **{k: opts[k] for k in MLP_RECIPE},
    )
    return {f"mlp_{k}": v for k, v in m.items()}
