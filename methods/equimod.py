"""EquiMod (Devillers & Lefort, 2023; spec/methods.md §6): predict each view's embedding
from the un-augmented image's embedding and the view's augmentation parameters.

y_k = P_eq(h_k) for the clean image x0 and the views x1, x2; ŷ_k = pred([y0, embed(p_k)]),
with p_k the view's 18-d parameter vector standardised by dataset constants (``3view`` policy,
``ViewPolicy.fit_stats``); τ = 0.2, λ = 1. The base method's loss plays EquiMod's invariant
part. Head widths for ViT-S: hidden = backbone width (SER's 384, as the ResNet-50 original's
2048 for 2048-d features); output 128.

Default: what the public SER code computed for Table 1's +EquiMod row
(aitrics-chris/SER ``builder/moco.py`` ``MoCo.equimod``, ``loader/equimod.py``): the projector
runs once per image set (y0, y1, y2: three BatchNorm batches of B), the parameter embedding
and the predictor once on the 2B rows [p1; p2] / [y0; y0], and the loss is
½·(C(yt, ŷ) + C(ŷ, yt)) with yt = [y1; y2], ŷ = [ŷ1; ŷ2] and C MoCo-v3's contrastive term
(cosine logits / τ against the other set only, keys detached and gathered, CE · 2τ).

``@original`` (version 3): EquiMod's repository (ADevillers/EquiMod, branches SimCLR+EquiMod
908c7b4 and BYOL+EquiMod 5c936cf, ``src/model.py`` ``EquiMod.forward``, ``src/main.py``): the
projector runs once over [x0; x1; x2] (one BatchNorm batch of 3B), the embedding and the
predictor once over the 2B rows, and the loss is NT-Xent over the 4B set [y1, y2, ŷ1, ŷ2]
(positives (y_k, ŷ_k), every other row a negative, self-similarity masked). Versions ≤ 2's
``@original`` ran the projector, embedding and predictor per tensor.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
import torch.nn as nn

from harness.data.augment import IDX, PARAMS
from harness.data.requests import ViewRequest
from methods.base import AddOn, Encoded
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
    # 3: @original batches as EquiMod's repository (2: per tensor); the default is unchanged.
    version = 3
    description = "EquiMod: predict view embeddings from the clean image's and the aug. parameters"
    modifier_help = (
        "@layerK @lambdaL @tauT @original (EquiMod's repository: projector once over the 3B "
        "rows [clean; view 1; view 2], 4B NT-Xent; default: projector per image set and "
        "MoCo-style InfoNCE both ways, as the public SER code)"
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

    def view_request(self, augs) -> ViewRequest:
        return ViewRequest(standardise_params=True)

    def attach(self, method):
        d, e = method.backbone.width, self.width(self.out_width)
        self.projector = moco_mlp(3, d, d, e)  # last BN without affine, as official
        self.embed = nn.Sequential(nn.Linear(len(VECTOR), e, bias=False), nn.BatchNorm1d(e))
        self.predictor = nn.Sequential(
            nn.Linear(2 * e, e, bias=False), nn.BatchNorm1d(e, affine=False)
        )

    def predict(self, y0: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.predictor(torch.cat([y0, self.embed(p[:, VECTOR].to(y0.dtype))], dim=1))

    def embeddings(self, batch, online) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """y0 (B rows), yt = [y1; y2] and ŷ = [ŷ1; ŷ2] (2B rows each), batched as the code
        being reproduced batches them: BatchNorm in train mode sees each call's rows only."""
        f = [self.feature(batch["encoded"]["clean"]), *(self.feature(o) for o in online[:2])]
        if self.original:  # EquiMod's repository: one projector call over [x0; x1; x2]
            y = self.projector(torch.cat(f))
            y0, yt = y[: len(f[0])], y[len(f[0]) :]
        else:  # SER's MoCo.equimod: one call per image set
            y0, yt = self.projector(f[0]), torch.cat([self.projector(x) for x in f[1:]])
        # Both: the embedding and the predictor once on the 2B rows.
        y_hat = self.predict(torch.cat([y0, y0]), torch.cat(batch["params_z"]))
        return y0, yt, y_hat

    def losses(self, method, batch, online, target, progress):
        _, yt, y_hat = self.embeddings(batch, online)
        if self.original:
            return {"loss_equimod": self.lam * nt_xent(yt, y_hat, self.tau)}
        loss = 0.5 * (
            moco_v3_contrastive(yt, y_hat, self.tau) + moco_v3_contrastive(y_hat, yt, self.tau)
        )
        return {"loss_equimod": self.lam * loss}


def fixed_inputs(n: int = 16, width: int = 64, seed: int = 0):
    """An EquiMod add-on (train mode, float64) and a batch of fixed features and standardised
    parameters: what the departure's measurement and the tests run on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        add = EquiMod("moco_v3")
        add.attach(SimpleNamespace(backbone=SimpleNamespace(width=width)))
        add = add.double().train()
        feats = [torch.randn(n, width, dtype=torch.float64) for _ in range(3)]
        params = [torch.randn(n, len(PARAMS), dtype=torch.float64) for _ in range(2)]
    batch = {"encoded": {"clean": Encoded(feats[0], [{}], [n])}, "params_z": params}
    online = [Encoded(f, [{}], [n]) for f in feats[1:]]
    return add, batch, online


def batching_effect_numbers() -> dict[str, float]:
    """The default's and ``@original``'s loss on :func:`fixed_inputs`, and the repository's
    loss with the projector run per image set instead (its batching alone)."""
    add, batch, online = fixed_inputs()
    out = {}
    for name, original in (("default", False), ("original", True)):
        add.original = original
        out[name] = add.losses(None, batch, online, None, None)["loss_equimod"].item()
    add.original = False  # SER's batching, the repository's loss
    _, yt, y_hat = add.embeddings(batch, online)
    out["original_per_set"] = (add.lam * nt_xent(yt, y_hat, add.tau)).item()
    return out


def batching_effect() -> str:
    """The measured size of departure ``equimod-batching`` (methods/departures.py)."""
    v = batching_effect_numbers()
    batching = abs(v["original_per_set"] - v["original"]) / v["original"]
    return (
        f"@original's loss {v['original'] / v['default']:.3g}× the default's; its joint 3B "
        f"projector batch alone moves it by {batching:.2g} relative (B = 16, train mode, "
        "fixed tensors)"
    )
