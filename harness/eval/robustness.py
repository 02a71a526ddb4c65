"""ImageNet-C and ImageNet-P metrics (spec/evals.md §2.4–2.5, §3.3–3.4) on plain tensors.

Everything here takes accuracies, errors, predictions or logits; reading the corrupted
images and videos belongs to the dataset readers. Units: accuracies, CE/mCE and flip
probability in percent, raw errors in fractions (like the AlexNet constants), top-5 and Zipf
distances in rank units as the official script prints them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from harness.data.readers.imagenet_c import CORRUPTIONS  # the 15 of mCE, in canonical order
from harness.eval.metrics import topk

# AlexNet top-1 error per corruption and severity 1..5 (fractions); CE divides by their mean.
ALEXNET_ERR_BY_SEVERITY = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
ALEXNET_ERR = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# AlexNet's clean top-1 error for relative mCE. Second-hand (spec §2.4 marks relative mCE
# NOT VERIFIED): the value google-research/robustness_metrics uses in reports/imagenet.py.
ALEXNET_CLEAN_ERR = 0.4348


def _mean(xs) -> float:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs)


# ---- ImageNet-C -----------------------------------------------------------------------------


def mce(errors: Mapping[str, Sequence[float]], corruptions=CORRUPTIONS) -> dict[str, float]:
    """CE_c = mean_s E_{s,c} / mean_s E^AlexNet_{s,c} and mCE = mean_c CE_c, in percent.

    ``errors[c]`` are the five per-severity top-1 errors, fractions.
    """
    out = {f"{c}/ce": 100.0 * _mean(errors[c]) / ALEXNET_ERR[c] for c in corruptions}
    out["mCE"] = _mean(out[f"{c}/ce"] for c in corruptions)
    return out


def relative_mce(
    errors: Mapping[str, Sequence[float]],
    clean_error: float,
    corruptions=CORRUPTIONS,
    alexnet_clean: float = ALEXNET_CLEAN_ERR,
) -> dict:
    """Relative CE_c = (mean_s E_{s,c} − E_clean) / (mean_s E^AlexNet_{s,c} − E^AlexNet_clean),
    in percent: how much worse than clean, relative to how much worse AlexNet gets."""
    out = {
        f"{c}/relative_ce": 100.0
        * (_mean(errors[c]) - clean_error)
        / (ALEXNET_ERR[c] - alexnet_clean)
        for c in corruptions
    }
    out["relative_mCE"] = _mean(out[f"{c}/relative_ce"] for c in corruptions)
    return out


def imagenet_c_summary(
    top1: Mapping[str, Sequence[float]],
    top5: Mapping[str, Sequence[float]] | None = None,
    clean_top1: float | None = None,
    corruptions=CORRUPTIONS,
) -> dict:
    """From per-severity accuracies in percent: "<c>/top1" (mean over severities, equal set
    sizes), "avg/top1" over ``corruptions`` (same for top5), CE/mCE and, given the clean
    accuracy, relative CE/mCE."""
    out = {}
    for name, acc in (("top1", top1), ("top5", top5)):
        if acc is None:
            continue
        for c in corruptions:
            out[f"{c}/{name}"] = _mean(acc[c])
        out[f"avg/{name}"] = _mean(out[f"{c}/{name}"] for c in corruptions)
    scored = [c for c in corruptions if c in ALEXNET_ERR]
    errors = {c: [1 - a / 100.0 for a in top1[c]] for c in scored}
    out.update(mce(errors, scored))
    if clean_top1 is not None:
        out.update(relative_mce(errors, 1 - clean_top1 / 100.0, scored))
    return out


# ---- ImageNet-P -----------------------------------------------------------------------------


def is_noise(perturbation: str) -> bool:
    """The official script's test: noise sequences are compared with their first frame."""
    return "noise" in perturbation


def frame_pairs(n_frames: int, noise: bool, stride: int = 1) -> tuple[list[int], list[int]]:
    """(reference, later) frame indices the official FP and T5D compare.

    Noise: every frame against frame 0 (the stride is 1 whatever the difficulty). Others: for
    each offset i < stride, consecutive frames of i, i+stride, i+2·stride, …
    """
    if noise:
        return [0] * (n_frames - 1), list(range(1, n_frames))
    ref, cur = [], []
    for i in range(stride):
        seq = list(range(i, n_frames, stride))
        ref += seq[:-1]
        cur += seq[1:]
    return ref, cur


def flip_probability(preds: torch.Tensor, noise: bool, stride: int = 1) -> torch.Tensor:
    """Per-video share of compared frame pairs whose top-1 differs; preds: V×T class ids."""
    ref, cur = frame_pairs(preds.shape[1], noise, stride)
    return (preds[:, ref] != preds[:, cur]).float().mean(1)


def _ranks(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes by rank, rank of each class, 1-based) with scipy's ordinal ties: first wins."""
    order = torch.argsort(-logits, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(1, logits.shape[-1] + 1).expand_as(order).contiguous())
    return order, ranks


def rank_distances(logits: torch.Tensor, noise: bool, stride: int = 1) -> dict[str, torch.Tensor]:
    """Per-video top-5 and Zipf distances; logits V×T×C.

    σ(k) = rank, in the later frame, of the class ranked k in the reference frame;
    top5 = Σ_{k≤5} |k − min(σ(k), 6)|, zipf = Σ_k |1/k − 1/σ(k)| / k.
    """
    ref, cur = frame_pairs(logits.shape[1], noise, stride)
    order, ranks = _ranks(logits)
    sigma = ranks[:, cur].gather(-1, order[:, ref]).double()  # V×P×C
    k = torch.arange(1, logits.shape[-1] + 1, dtype=torch.float64)
    top5 = (k[:5] - sigma[..., :5].clamp(max=6)).abs().sum(-1)
    zipf = ((1 / k - 1 / sigma).abs() / k).sum(-1)
    return {"top5": top5.mean(1), "zipf": zipf.mean(1)}


def frame_topk(logits: torch.Tensor, labels: torch.Tensor, drop_first: bool = False) -> dict:
    """§3.4: top-1/top-5 over all frames (percent), each frame labelled with its video's class."""
    if drop_first:
        logits = logits[:, 1:]
    v, t, c = logits.shape
    return topk(logits.reshape(v * t, c), labels.repeat_interleave(t))


def imagenet_p_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    perturbation: str,
    difficulty: int = 1,
    drop_first: bool = False,
) -> dict:
    """One perturbation's videos (V×T×C logits, V labels): frame top-1/top-5 and flip
    probability in percent, top-5 and Zipf distances. For many videos, call per batch and
    average the per-video values (``flip_probability``, ``rank_distances``) yourself."""
    noise = is_noise(perturbation)
    out = frame_topk(logits, labels, drop_first and noise)
    out["flip_prob"] = 100.0 * flip_probability(logits.argmax(-1), noise, difficulty).mean().item()
    dist = rank_distances(logits, noise, difficulty)
    out["top5_dist"] = dist["top5"].mean().item()
    out["zipf_dist"] = dist["zipf"].mean().item()
    return out
