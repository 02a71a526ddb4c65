"""E-SSL (Dangovski et al., 2022; spec/methods.md §7): four-fold rotation prediction.

Every image gives one small crop, seen in all four 90° rotations (the ``rot4`` view
policy); a LayerNorm MLP on the backbone feature predicts which. λ follows the base loss's
scale, as the official commands do: 0.4 for contrastive / cross-entropy losses (E-SimCLR;
used here for MoCo-v3 and DINO), 8 for Barlow Twins; another base names it (``@lambdaL``).
"""

from __future__ import annotations

import re

import torch.nn.functional as F

from harness.errors import HarnessError
from methods.base import AddOn
from methods.heads import ln_mlp
from methods.registry import register_addon

LAMBDA = {"moco_v3": 0.4, "dino": 0.4, "barlow_twins": 8.0}
OUT_WIDTH = {"barlow_twins": 256}  # per base, where not ``ESSL.out_width``


@register_addon("essl")
class ESSL(AddOn):
    description = "E-SSL: predict the 90° rotation of a small crop (LayerNorm head)"
    modifier_help = "@layerK @lambdaL"
    requires = ("rotated_crops",)
    out_width = 128  # the head's projection width at paper scale

    def __init__(self, base_name: str, layer: int | None = None, lam: float | None = None):
        super().__init__(base_name, layer)
        if lam is None and base_name not in LAMBDA:
            raise HarnessError(
                f"{self.name} has no λ for base '{base_name}' (it knows {', '.join(LAMBDA)}): "
                f"name it, e.g. {base_name}+{self.name}@lambda0.4"
            )
        self.lam = LAMBDA[base_name] if lam is None else lam

    @classmethod
    def parse_modifier(cls, token):
        m = re.fullmatch(r"lambda([0-9.e-]+)", token)
        return {"lam": float(m.group(1))} if m else super().parse_modifier(token)

    def attach(self, method):
        # Hidden width = backbone width, as the ResNet-50 original (2048-d features, 2048
        # hidden); the output 128 (SimCLR) or 256 (Barlow Twins), as official.
        d = method.backbone.width
        proj = self.width(OUT_WIDTH.get(self.base_name, self.out_width))
        self.head = ln_mlp(d, d, proj, 4)

    def losses(self, method, batch, online, target, progress):
        logits = self.head(self.feature(batch["encoded"]["rotated"]))
        return {"loss_essl": self.lam * F.cross_entropy(logits, batch["rot_labels"])}
