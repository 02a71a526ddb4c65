"""Projection heads of the base methods and of SER, as their specs give them."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def moco_mlp(
    n_layers: int, d_in: int, d_hidden: int, d_out: int, last_bn: bool = True
) -> nn.Sequential:
    """MoCo-v3 MLP: bias-free Linears, BN+ReLU between, BN(affine=False) at the end."""
    layers = []
    for i in range(n_layers):
        a = d_in if i == 0 else d_hidden
        b = d_out if i == n_layers - 1 else d_hidden
        layers.append(nn.Linear(a, b, bias=False))
        if i < n_layers - 1:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*layers)


def barlow_projector(d_in: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Barlow Twins: Linear-BN-ReLU blocks, a bare bias-free Linear at the end."""
    layers, a = [], d_in
    for i, b in enumerate(widths):
        layers.append(nn.Linear(a, b, bias=False))
        if i < len(widths) - 1:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        a = b
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """3-layer GELU MLP → L2-normalised bottleneck → weight-normalised prototypes."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        hidden: int = 2048,
        bottleneck: int = 256,
        norm_last_layer: bool = False,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck, d_out, bias=False)
        )
        g = self.last_layer.parametrizations.weight.original0
        g.data.fill_(1.0)
        if norm_last_layer:
            g.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class TokenProjector(nn.Module):
    """SER's per-token projector (a 1×1 conv in the public code) on B×D×h×w maps."""

    def __init__(self, d_in: int, d_hidden: int = 512, d_out: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, d_hidden, bias=False), nn.GELU(), nn.Linear(d_hidden, d_out, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def bn_mlp(
    d_in: int, hidden: tuple[int, ...], d_out: int, last_bias: bool = False
) -> nn.Sequential:
    """Bias-free Linear-BN-ReLU blocks, then a Linear (AugSelf's, STL's heads)."""
    layers, a = [], d_in
    for h in hidden:
        layers += [nn.Linear(a, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        a = h
    layers.append(nn.Linear(a, d_out, bias=last_bias))
    return nn.Sequential(*layers)


def ln_mlp(d_in: int, hidden: int, d_proj: int, n_out: int) -> nn.Sequential:
    """E-SSL's predictor: Linear-LN-ReLU ×2, Linear-LN, Linear; LayerNorm, not BatchNorm."""
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, d_proj),
        nn.LayerNorm(d_proj),
        nn.Linear(d_proj, n_out),
    )
