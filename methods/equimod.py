"""EquiMod (Devillers & Lefort, 2023; spec/methods.md §6): predict each view's embedding
from the un-augmented image's embedding and the view's augmentation parameters.

y_k = P_eq(h_k) for the clean image x0 and the views x1, x2 (the projector run once per
image set, three BatchNorm batches of B); ŷ_k = pred([y0, embed(p_k)]), with p_k the view's
18-d parameter vector standardised by dataset constants (``3view`` policy,
``ViewPolicy.fit_stats``); τ = 0.2, λ = 1. The base method's loss plays EquiMod's invariant
part. Head widths for ViT-S: hidden = backbone width (SER's 384, as the ResNet-50 original's
2048 for 2048-d features); output 128.

Default (version 2): what the public SER code computed for Table 1's +EquiMod row
(aitrics-chris/SER ``builder/moco.py`` ``MoCo.equimod``, ``loader/equimod.py``): the parameter
embedding and the predictor run once on the 2B rows [p1; p2] / [y0; y0] (one BatchNorm batch),
and the loss is ½·(C(yt, ŷ) + C(ŷ, yt)) with yt = [y1; y2], ŷ = [ŷ1; ŷ2] and C MoCo-v3's
contrastive term (cosine logits / τ against the other set only, keys detached and gathered,
CE · 2τ). ``@original`` gives what the harness computed before: embedding and predictor per
view (two BatchNorm batches of B) and EquiMod's NT-Xent over the 4B set [y1, y2, ŷ1, ŷ2]
(positives (y_k, ŷ_k), every other row a negative, negatives keep the local gradient).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from harness.data.augment import IDX, PARAMS
from methods.base import AddOn
from methods.heads import moco_mlp
from methods.losses import moco_v3_contrastive, nt_xent
from methods.registry import register_addon

# The 18-d parameter vector: crop box in pixels + flip, jitter applied / order / factors,
# grayscale, blur applied / σ, solarize (the BYOL branch's 18 entries; SER's
# loader/equimod.py, in the same order): PARAMS without the image size and kornia's solarize
# threshold (the public EquiMod loader solarizes at a fixed 128).
VECTOR_NAMES = tuple(n for n in PARAMS if n not in ("img_h", "img_w", "threshold"))
VECTOR = [IDX[n] for n in VECTOR_NAMES]


@register_addon("equimod")
class EquiMod(AddOn):
    version = 2  # the public SER code's batching and loss by default; version 1 = @original
    description = "EquiMod: predict view embeddings from the clean image's and the aug. parameters"
    modifier_help = (
        "@layerK @lambdaL @tauT @original (predictor per view and 4B NT-Xent; default: "
        "predictor once on both views and MoCo-style InfoNCE both ways, as the public SER code)"
    )
    requires = ("aug_params", "clean_view")
    out_width = 128  # the projector's output width at paper scale

    def __init__(
        self,
        base_name: str,
        layer: int | None = None,
        lam: float = 1.0,
        tau: float = 0.2,
        original: bool = False,
    ):
        super().__init__(base_name, layer)
        self.lam, self.tau, self.original = lam, tau, original

    @classmethod
    def parse_modifier(cls, token):
        if token == "original":
            return {"original": True}
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
        yt = torch.cat([self.projector(self.feature(o)) for o in online[:2]])
        params = batch["params_z"]
        if self.original:
            y_hat = torch.cat([self.predict(y0, p) for p in params])
            return {"loss_equimod": self.lam * nt_xent(yt, y_hat, self.tau)}
        y_hat = self.predict(torch.cat([y0, y0]), torch.cat(params))
        loss = 0.5 * (
            moco_v3_contrastive(yt, y_hat, self.tau) + moco_v3_contrastive(y_hat, yt, self.tau)
        )
        return {"loss_equimod": self.lam * loss}
