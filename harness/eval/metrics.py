"""Scores on tensors (top-k accuracy) and the range every reported metric must lie in. The
bottom of ``harness.eval``: no data, no models."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

import torch

INF = math.inf

# The range of each metric the evaluators report, by the last part of its name ("avg/top1",
# "layer4/rotation_pred_acc", "gaussian_noise/ce"); the first pattern that matches decides.
# A value outside its range (or NaN/inf anywhere) is no measurement: the result is refused
# when written and set aside when read, so it is computed again rather than tabulated.
RANGES: tuple[tuple[str, float, float], ...] = (
    ("*_dist", 0.0, INF),  # ImageNet-P top-5 and Zipf rank distances
    ("top[0-9]", 0.0, 100.0),  # accuracies in percent: linear, k-NN, transfer, C, P, 3DIE
    ("top[0-9][0-9]", 0.0, 100.0),
    ("*_top[0-9]", 0.0, 100.0),  # mlp_top1, finetune_top5
    ("*_top[0-9][0-9]", 0.0, 100.0),
    ("*pred_acc", 0.0, 100.0),  # transform prediction accuracy, percent
    ("*pred_acc_std", 0.0, 100.0),
    ("flip_prob", 0.0, 100.0),  # ImageNet-P flip probability, percent
    ("relative_*", -INF, INF),  # relative CE may fall below zero
    ("mCE", 0.0, INF),
    ("ce", 0.0, INF),
    ("r2", -INF, 1.0),  # R² of a regression: 1 is perfect, no lower bound
    ("mse", 0.0, INF),
    ("mAP*", 0.0, 1.0),  # COCO AP as fractions
    ("equiv_*", -1.0, 1.0),  # cosine similarities
    ("n_*", 0.0, INF),  # counts of images, objects, points
)


def metric_range(name: str) -> tuple[float, float] | None:
    """The allowed [low, high] of metric ``name``, or None when only finiteness is asked."""
    last = name.rsplit("/", 1)[-1]
    for pattern, lo, hi in RANGES:
        if fnmatchcase(last, pattern):
            return lo, hi
    return None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _inside(v: float, lo: float, hi: float) -> bool:
    # Float sums may land a hair past a bound (a cosine of 1 + 1e-7).
    tol = 1e-6 * max([1.0] + [abs(b) for b in (lo, hi) if math.isfinite(b)])
    return lo - tol <= v <= hi + tol


def _problem(name: str, v) -> str | None:
    rng = metric_range(name)
    if isinstance(v, dict):
        for k, sub in v.items():
            if why := _problem(f"{name}/{k}", sub):
                return why
        return None
    if isinstance(v, list):
        for sub in v:
            if why := _problem(name + "[]", sub):
                return why
        return None
    if not _number(v):
        return f"metric {name} is {v!r}, not a number" if rng else None
    if not math.isfinite(v):
        return f"metric {name} is {v}"
    if rng and not _inside(v, *rng):
        lo, hi = rng
        return f"metric {name} is {v:g}, outside its range [{lo:g}, {hi:g}]"
    return None


def metrics_problem(metrics) -> str | None:
    """Why ``metrics`` (an evaluator's output) is no measurement, or None when it is one: it
    must be a non-empty mapping, every number in it finite, every named metric a number in its
    range (``RANGES``)."""
    if not isinstance(metrics, dict) or not metrics:
        return f"metrics are {'missing' if not metrics else type(metrics).__name__}"
    for k, v in metrics.items():
        if why := _problem(str(k), v):
            return why
    if not any(_number(v) for v in metrics.values()):
        return "no metric is a number"
    return None


def topk(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    k = min(max(ks), logits.shape[1])
    pred = logits.topk(k, dim=1).indices
    hit = pred == y[:, None]
    return {f"top{kk}": 100.0 * hit[:, : min(kk, k)].any(1).float().mean().item() for kk in ks}
