"""Weighted k-NN classifier (spec/evals.md §7.4, DINO's ``knn_classifier``).

Features are L2-normalised, so the dot product is the cosine; each of the k nearest training
features votes for its class with weight exp(sim / T). Classes are ranked by summed weight. A
class that received no vote never counts as a top-5 hit: DINO's full sort would place such
classes in arbitrary order, which only matters when fewer than five classes are voted for.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from harness.eval.features import run_features

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


@torch.no_grad()
def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
    quiet: bool = True,
) -> torch.Tensor:
    """Summed exp(sim/T) vote per class: a len(test_x) × n_classes tensor."""
    train = F.normalize(train_x.float(), dim=1)
    test = F.normalize(test_x.float(), dim=1)
    k = min(k, len(train))
    out = []
    for part in tqdm(test.split(chunk), desc="k-NN", disable=quiet, leave=False):
        sim, idx = (part @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(part), n_classes, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, train_y[idx].long(), (sim / temperature).exp())
        out.append(votes)
    return torch.cat(out)


def vote_topk(scores: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """top-k accuracy in percent; only voted classes (score > 0) can be hits."""
    own = scores.gather(1, y.long()[:, None])
    above = (scores > own).sum(1)  # classes ranked strictly before the label
    voted = own[:, 0] > 0
    return {f"top{kk}": 100.0 * (voted & (above < kk)).float().mean().item() for kk in ks}


def knn_classify(
    train_x,
    train_y,
    test_x,
    test_y,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
    quiet: bool = True,
) -> dict:
    """{"top1", "top5"} in percent."""
    scores = knn_scores(train_x, train_y, test_x, n_classes, k, temperature, chunk, quiet)
    return vote_topk(scores, test_y.to(scores.device))


def knn_eval(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: {"knn<k>_top1", "knn<k>_top5"} on the final-LayerNorm [CLS], i.e. the last
    chunk of the cached n_last features the linear probe uses."""
    opts = cfg["knn"]
    tr, va = run_features(run_dir, data_root, cfg, quiet=quiet)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    width = cfg["model"]["width"]
    train_x, test_x = (f["cls"][:, -width:].to(device) for f in (tr, va))
    metrics = {}
    for k in opts["ks"]:
        m = knn_classify(
            train_x,
            tr["labels"].to(device),
            test_x,
            va["labels"].to(device),
            tr["n_classes"],
            k,
            opts["temperature"],
            quiet=quiet,
        )
        metrics.update({f"knn{k}_{name}": v for name, v in m.items()})
    return metrics
