"""SER — soft equivariance regularisation (spec/ser.md), as an add-on to any base method.

``+ser`` is the paper's method: L = L_inv + λ·L_equiv, with L_equiv's gradient reaching the
projector and blocks 1…k. ``+ser_detached`` and ``+delayed_cls`` (the public code's actual
behaviour and its architecture-only ablation) are in ``ser_ablations.py``.

As the public code (``builder/moco.py`` ``equiv``, ``Aug_equi``), by default:

* both token maps are projected first and ρ_g acts on the projected target map
  (``@rho_first`` acts on the backbone's map and projects after: bicubic resizing does not
  commute with the GELU projector);
* every rank draws its own token grids and 90° rotations each step (``@shared_grid``: one
  draw per global step for all ranks); the token sets, of different sizes per rank, are
  gathered with their sizes, and L_equiv is the mean over every rank's query tokens.
"""

from __future__ import annotations

import re

import torch

from harness.data.requests import EquivPairs, ViewRequest
from harness.errors import HarnessError
from harness.model.backbone import BackboneConfig
from harness.model.group import act_each, relative
from harness.parallel import dist
from methods.base import AddOn
from methods.heads import TokenProjector
from methods.losses import token_infonce
from methods.registry import register_addon

# τ and λ per base method, where the paper and the public launch commands disagree
# (spec/ser.md §5). The paper gives no λ, so its preset takes the public value. Another
# base has none: name both (``simsiam+ser@tau0.2@lambda1``).
HYPER = {
    "paper": {"moco_v3": (0.3, 1.0), "dino": (0.5, 0.3), "barlow_twins": (0.3, 1.0)},
    "code": {"moco_v3": (0.5, 1.0), "dino": (0.4, 0.3), "barlow_twins": (0.4, 1.0)},
}
_MODS = {
    "layer": ("layer", int),
    "cls": ("cls_layer", int),
    "r": ("ratio", float),
    "lambda": ("lam", float),
    "tau": ("tau", float),
}


@register_addon("ser")
class SER(AddOn):
    description = "SER: token InfoNCE between ρ_g(f1(x1)) and f1(x2) at layer k, delayed [CLS]"
    modifier_help = (
        "@layerK @clsC @rR @lambdaL @tauT @paper|@code @independent @rho_first @shared_grid"
    )
    # 2: the public code's order (project, then ρ_g) and per-rank group elements (issue 13).
    version = 2
    requires = ("equiv_pairs",)
    # The token projector's widths at paper scale (the public code's 1×1 convs).
    hidden_width = 512
    out_width = 512
    uses_hyper = True  # τ and λ enter its loss

    def __init__(
        self,
        base_name: str,
        layer: int = 3,
        cls_layer: int | None = None,
        ratio: float = 0.01,
        lam: float | None = None,
        tau: float | None = None,
        hyper: str = "paper",
        policy: str = "public",
        scale: tuple = (0.7, 1.3),
        aspect: tuple = (3 / 4, 4 / 3),
        rho_first: bool = False,
        shared_grid: bool = False,
    ):
        super().__init__(base_name, layer)
        tau0, lam0 = HYPER[hyper].get(base_name, (None, None))
        self.lam = lam0 if lam is None else lam
        self.tau = tau0 if tau is None else tau
        if self.uses_hyper and None in (self.tau, self.lam):
            raise HarnessError(
                f"{self.name} has no τ/λ for base '{base_name}' (it knows "
                f"{', '.join(HYPER[hyper])}): name them, e.g. "
                f"{base_name}+{self.name}@tau0.2@lambda1"
            )
        if not 0 < ratio < 1:
            raise HarnessError(
                f"{self.name}@r{ratio:g}: r is the share of each rank's batch that goes to "
                f"the equivariance pairs, the rest to the base method's views: give 0 < r < 1, "
                f"e.g. @r0.25"
            )
        if self.uses_hyper and not (self.tau > 0 and self.lam >= 0):
            raise HarnessError(
                f"{self.name}@tau{self.tau:g}@lambda{self.lam:g}: the temperature τ must be "
                f"> 0 and the weight λ ≥ 0, e.g. @tau0.2@lambda1"
            )
        self.layer = layer
        self.cls_layer = layer if cls_layer is None else cls_layer
        self.ratio, self.policy, self.hyper = ratio, policy, hyper
        self.scale, self.aspect = tuple(scale), tuple(aspect)
        self.rho_first, self.shared_grid = rho_first, shared_grid

    @classmethod
    def parse_modifier(cls, token: str):
        if token in HYPER:
            return {"hyper": token}
        if token in ("public", "independent"):
            return {"policy": token}
        if token in ("rho_first", "shared_grid"):
            return {token: True}
        m = re.fullmatch(r"([a-z]+)([0-9.e-]+)", token)
        if m and m.group(1) in _MODS:
            key, typ = _MODS[m.group(1)]
            try:
                return {key: typ(m.group(2))}
            except ValueError:
                return None
        return None

    def configure_backbone(self, cfg: BackboneConfig) -> BackboneConfig:
        if not 1 <= self.layer <= cfg.depth:
            raise HarnessError(
                f"SER layer {self.layer} is outside the backbone's blocks "
                f"1…{cfg.depth}: pick @layerK with K in that range"
            )
        return BackboneConfig(
            **{**cfg.__dict__, "cls_layer": self.cls_layer, "equiv_layer": self.layer}
        )

    def taps(self):
        return {self.layer}

    def attach(self, method):
        self.projector = TokenProjector(
            method.backbone.width, self.width(self.hidden_width), self.width(self.out_width)
        )

    def view_request(self, augs) -> ViewRequest:
        pairs = EquivPairs(
            self.ratio, self.policy, self.scale, self.aspect, not self.shared_grid, "+ser@r"
        )
        return ViewRequest(equiv_pairs=pairs)

    def _direction(self, tmap: torch.Tensor, qmap: torch.Tensor, elements) -> torch.Tensor:
        """Queries of this rank against ρ_g(target) tokens of every rank.

        Ranks may hold different grids (per-rank draws), so the token sets are gathered with
        their sizes, and this rank's share of the loss is its query tokens' sum over the mean
        token count per rank: averaged over ranks (as gradients are), the mean over every
        rank's tokens, which is what the public code computes.
        """
        if self.rho_first:
            t = self.projector(act_each(tmap, elements))
        else:
            t = act_each(self.projector(tmap), elements)
        q = self.projector(qmap)
        b, d, h, w = q.shape
        t = t.permute(0, 2, 3, 1).reshape(-1, d)
        q = q.permute(0, 2, 3, 1).reshape(-1, d)
        t_all, counts = dist.gather_varying(t, grad=True)
        img = torch.arange(b, device=q.device).repeat_interleave(h * w) + b * dist.rank()
        start = sum(counts[: dist.rank()])
        positive = torch.arange(len(q), device=q.device) + start
        img_all, _ = dist.gather_varying(img, grad=False)
        loss = token_infonce(t_all, q, img_all, img, positive, self.tau)
        return loss * (len(q) * len(counts) / sum(counts))

    def equiv_loss(self, online, target, batch) -> torch.Tensor:
        """Mean over the batch's pairs of views (one, or one global + two local with 2+4)."""
        eq = batch["equiv"]
        c, k = eq["chunk"], self.layer
        losses = []
        for a, b, g_a, g_b in eq["pairs"]:
            rel = relative(g_a, g_b)
            if target is None or a >= len(target):
                # No target network (Barlow Twins) or local views, which only the online
                # encoder sees: both maps online, one direction.
                losses.append(self._direction(online[a].tokens[c][k], online[b].tokens[c][k], rel))
                continue
            inv = [g.inverse() for g in rel]
            losses.append(
                0.5
                * (
                    self._direction(target[a].tokens[c][k], online[b].tokens[c][k], rel)
                    + self._direction(target[b].tokens[c][k], online[a].tokens[c][k], inv)
                )
            )
        return sum(losses) / len(losses)

    def losses(self, method, batch, online, target, progress):
        return {"loss_equiv": self.lam * self.equiv_loss(online, target, batch)}
