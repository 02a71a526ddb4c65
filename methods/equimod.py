"""EquiMod (Devillers & Lefort, 2023; spec/methods.md §6): predict each view's embedding
from the un-augmented image's embedding and the view's augmentation parameters.

y_k = P_eq(h_k) for the clean image x0 and the views x1, x2; ŷ_k = pred([y0, embed(p_k)]),
with p_k the view's parameter vector standardised by dataset constants (``3view`` policy,
``ViewPolicy.fit_stats``); loss λ·NT-Xent over the 4B set [y1, y2, ŷ1, ŷ2] whose positive
pairs are (y_k, ŷ_k), τ = 0.2, λ = 1. The base method's loss plays EquiMod's invariant part.
Head widths for ViT-S are a project decision: hidden = backbone width, as the ResNet-50
original (2048-d features, 2048 hidden); output 128.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from harness.data.augment import PARAMS
from methods.base import AddOn
from methods.heads import moco_mlp
from methods.losses import nt_xent
from methods.registry import register_addon

# The 18-d parameter vector: crop box in pixels + flip, jitter applied / order / factors,
# grayscale, blur applied / σ, solarize (the BYOL branch's 18 entries).
VECTOR = [i for i, n in enumerate(PARAMS) if n not in ("img_h", "img_w")]


@register_addon("equimod")
class EquiMod(AddOn):
    description = "EquiMod: predict view embeddings from the clean image's and the aug. parameters"
    modifier_help = "@layerK @lambdaL @tauT"
    requires = ("aug_params", "clean_view")
    out_width = 128  # the projector's output width at paper scale

    def __init__(
        self, base_name: str, layer: int | None = None, lam: float = 1.0, tau: float = 0.2
    ):
        super().__init__(base_name, layer)
        self.lam, self.tau = lam, tau

    @classmethod
    def parse_modifier(cls, token):
        m = re.fullmatch(r"(lambda|tau)([0-9.e-]+)", token)
        if m:
            return {"lam" if m.group(1) == "lambda" else "tau": float(m.group(2))}
        return super().parse_modifier(token)

    def view_options(self):
        return {"standardise_params": True}

    def attach(self, method):
        d, e = method.backbone.width, self.width(self.out_width)
        self.projector = moco_mlp(3, d, d, e)  # last BN without affine, as official
        self.embed = nn.Sequential(nn.Linear(len(VECTOR), e, bias=False), nn.BatchNorm1d(e))
        self.predictor = nn.Sequential(
            nn.Linear(2 * e, e, bias=False), nn.BatchNorm1d(e, affine=False)
        )

    def predict(self, y0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.predictor(torch.cat([y0, self.embed(p[:, VECTOR].to(y0.dtype))], dim=1))

    def losses(self, method, batch, online, target, progress):
        y0 = self.projector(self.feature(batch["encoded"]["clean"]))
        y = [self.projector(self.feature(o)) for o in online[:2]]
        y_hat = [self.predict(y0, p) for p in batch["params_z"]]
        return {"loss_equimod": self.lam * nt_xent(torch.cat(y), torch.cat(y_hat), self.tau)}
