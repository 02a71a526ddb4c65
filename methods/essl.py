"""E-SSL (Dangovski et al., 2022; spec/methods.md §7): four-fold rotation prediction.

Every image gives one small crop, seen in all four 90° rotations (the ``rot4`` view
policy); a LayerNorm MLP on the backbone feature predicts which. λ follows the base loss's
scale, as the official commands do: 0.4 for contrastive / cross-entropy losses (E-SimCLR;
used here for MoCo-v3 and DINO), 8 for Barlow Twins.
"""

from __future__ import annotations

import re

import torch.nn.functional as F

from methods.base import AddOn
from methods.heads import ln_mlp
from methods.registry import register_addon

LAMBDA = {"moco_v3": 0.4, "dino": 0.4, "barlow_twins": 8.0}


@register_addon("essl")
class ESSL(AddOn):
    description = "E-SSL: predict the 90° rotation of a small crop (LayerNorm head)"
    modifier_help = "@layerK @lambdaL"
    requires = ("rotated_crops",)

    def __init__(self, base_name: str, layer: int | None = None, lam: float | None = None):
        super().__init__(base_name, layer)
        self.lam = LAMBDA.get(base_name, 0.4) if lam is None else lam

    @classmethod
    def parse_modifier(cls, token):
        m = re.fullmatch(r"lambda([0-9.e-]+)", token)
        return {"lam": float(m.group(1))} if m else super().parse_modifier(token)

    def attach(self, method, dims):
        # Hidden width = backbone width, as the ResNet-50 original (2048-d features, 2048
        # hidden); the output 128 (SimCLR) or 256 (Barlow Twins), as official.
        d = method.backbone.width
        proj = dims["aux_dim"] * (2 if self.base_name == "barlow_twins" else 1)
        self.head = ln_mlp(d, d, proj, 4)

    def losses(self, method, batch, online, target, progress):
        logits = self.head(self.feature(batch["encoded"]["rotated"]))
        return {"loss_essl": self.lam * F.cross_entropy(logits, batch["rot_labels"])}
