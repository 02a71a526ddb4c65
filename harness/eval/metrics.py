"""Scores on tensors: top-k accuracy. The bottom of ``harness.eval``: no data, no models."""

from __future__ import annotations

import torch


def topk(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    k = min(max(ks), logits.shape[1])
    pred = logits.topk(k, dim=1).indices
    hit = pred == y[:, None]
    return {f"top{kk}": 100.0 * hit[:, : min(kk, k)].any(1).float().mean().item() for kk in ks}
