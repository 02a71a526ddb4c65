"""STL (Yu et al., 2024; spec/methods.md §5): learn transformation representations from
pairs of images that undergo the same view-1→view-2 transformation (``paired`` policy:
images 2i and 2i+1 share each view's crop and colour draw).

t_{1→2} = g([h1, h2]); L_trans contrasts P_t of the two partners' representations of the
same transformation (both directions); L_equi contrasts [P_eq(h1); P_eq(h2)] with
[P_eq(ĥ1); P_eq(ĥ2)], ĥ1 = W(t_{2→1} of partner)·h2 and ĥ2 = W(t_{1→2} of partner)·h1, with W
a hypernetwork giving a D×D matrix. τ = 0.2, weights 1 (equivariance) and 0.1
(transformation); the base method's loss is STL's invariance term. No stop-gradient anywhere
but the contrastive keys below.

P_eq runs separately on h1, h2, ĥ1, ĥ2 (four BatchNorm batches of B) and P_t on the two
halves of the transformation set, both in the public SER code (aitrics-chris/SER
``builder/moco.py`` ``MoCo.stl``, ``builder/utils.py`` ``load_mlp_stl`` / ``EquiTrans``,
``loader/stl.py``) and in STL's repository (jaemyung-u/stl 2138162, ``model.py``
``STL.forward``). They differ in the loss only. Default: SER's, for Table 1's +STL row: each
loss is C(a, b) + C(b, a) with C MoCo-v3's contrastive term (cosine logits / τ against the
other set only, keys detached and gathered, CE · 2τ). ``@original`` (version 3): STL's
repository, NT-Xent over the 2N set [a; b] for both losses (``STL.info_nce_loss``). Versions
≤ 2's ``@original`` projected [h1; h2] and [ĥ1; ĥ2] jointly (two batches of 2B), which no
public code does; it is gone.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
import torch.nn as nn

from methods.base import AddOn, Encoded
from methods.heads import bn_mlp
from methods.losses import moco_v3_contrastive, nt_xent
from methods.registry import register_addon


@register_addon("stl")
class STL(AddOn):
    # 3: @original is STL's repository (2: joint projections); the default is unchanged.
    version = 3
    description = "STL: transformation representations from image pairs + hypernetwork equivariance"
    modifier_help = (
        "@layerK @tauT @original (NT-Xent over the 2N set, as STL's repository; default: "
        "MoCo-style InfoNCE both ways, as the public SER code; both project per tensor)"
    )
    requires = ("paired_transforms",)
    weights = {"equi": 1.0, "trans": 0.1}
    # Widths at paper scale: transformation representation 128, equivariance projector 512.
    trans_width = 128
    hidden_width = 512

    def __init__(
        self, base_name: str, layer: int | None = None, tau: float = 0.2, original: bool = False
    ):
        super().__init__(base_name, layer)
        self.tau, self.original = tau, original

    @classmethod
    def parse_modifier(cls, token):
        if token == "original":
            return {"original": True}
        m = re.fullmatch(r"tau([0-9.e-]+)", token)
        return {"tau": float(m.group(1))} if m else super().parse_modifier(token)

    def attach(self, method):
        d, t, h = method.backbone.width, self.width(self.trans_width), self.width(self.hidden_width)
        self.feature_width = d
        self.trans_encoder = bn_mlp(2 * d, (t,), t)
        self.hypernet = nn.Linear(t, d * d, bias=False)
        self.equi_projector = bn_mlp(d, (h,), t)
        self.trans_projector = bn_mlp(t, (t,), t)

    def transform(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """W(t)·h per sample."""
        w = self.hypernet(t).view(-1, self.feature_width, self.feature_width)
        return torch.bmm(w, h.unsqueeze(-1)).squeeze(-1)

    def contrast(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.original:
            return nt_xent(a, b, self.tau)
        return moco_v3_contrastive(a, b, self.tau) + moco_v3_contrastive(b, a, self.tau)

    def losses(self, method, batch, online, target, progress):
        h1, h2 = self.feature(online[0]), self.feature(online[1])
        t12 = self.trans_encoder(torch.cat([h1, h2], 1))
        t21 = self.trans_encoder(torch.cat([h2, h1], 1))
        a = torch.cat([t12[0::2], t21[0::2]])
        b = torch.cat([t12[1::2], t21[1::2]])
        trans = self.contrast(self.trans_projector(a), self.trans_projector(b))
        partner = torch.arange(len(h1), device=h1.device) ^ 1
        h1_hat = self.transform(t21[partner], h2)
        h2_hat = self.transform(t12[partner], h1)
        # One P_eq call per tensor, as both public codes: BatchNorm in train mode sees B rows.
        p = self.equi_projector
        z = torch.cat([p(h1), p(h2)])
        z_hat = torch.cat([p(h1_hat), p(h2_hat)])
        return {
            "loss_stl_equi": self.weights["equi"] * self.contrast(z, z_hat),
            "loss_stl_trans": self.weights["trans"] * trans,
        }


def fixed_inputs(n: int = 16, width: int = 64, seed: int = 0):
    """An STL add-on (train mode, float64) and the two views' fixed features (images 2i and
    2i+1 partners): what the departure's measurement and the tests run on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        add = STL("moco_v3")
        add.attach(SimpleNamespace(backbone=SimpleNamespace(width=width)))
        add = add.double().train()
        online = [Encoded(torch.randn(n, width, dtype=torch.float64), [{}], [n]) for _ in "12"]
    return add, online


def loss_effect_numbers() -> dict[str, float]:
    """Each loss term, default and ``@original``, on :func:`fixed_inputs`."""
    add, online = fixed_inputs()
    out = {}
    for name, original in (("default", False), ("original", True)):
        add.original = original
        for k, v in add.losses(None, {}, online, None, None).items():
            out[f"{name}_{k.removeprefix('loss_stl_')}"] = v.item()
    return out


def loss_effect() -> str:
    """The measured size of departure ``stl-projections`` (methods/departures.py)."""
    v = loss_effect_numbers()
    return (
        f"@original's L_equi {v['original_equi'] / v['default_equi']:.3g}× and L_trans "
        f"{v['original_trans'] / v['default_trans']:.3g}× the default's (B = 16, train mode, "
        "fixed tensors)"
    )
