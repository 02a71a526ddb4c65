"""AugSelf (Lee et al., 2021; spec/methods.md §4): predict the difference of two views'
augmentation parameters from their concatenated backbone features.

Targets, per ordered pair (a, b): crop = [centre_a − centre_b, size_a − size_b] in image-
relative coordinates ([y, x, height, width]); colour = the difference of jitter factors
normalised by the width of their sampling range (zeros if not jittered). Loss per target =
MSE(tanh(head([h_a, h_b])), target), over both orders; weights 0.5 each (the ImageNet-100
setting), added to the base loss without λ. Heads: Linear-BN-ReLU ×2 (hidden 512), Linear.

Default (version 2): what the public SER code computed for Table 1's +AugSelf row
(aitrics-chris/SER, branch ``augself``: ``builder/utils.py`` ``extract_diff`` /
``SSObjective``, ``builder/moco.py`` ``augself``, ``loader/augself.py``). Its ``extract_diff``
mirrors *both* crop centres with view a's flip, and the (b, a) target is computed with view
b's flip, so where exactly one view is flipped the x entry of the (b, a) target equals that of
the (a, b) target instead of its negation. (AugSelf's own repository has the same
``extract_diff``.) ``@original`` gives what the harness computed before: each view's centre
mirrored by its own flip, as the AugSelf paper describes, and the (b, a) target = −(a, b).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from harness.data.augment import IDX, JITTER
from methods.base import AddOn
from methods.heads import bn_mlp
from methods.losses import augself_loss
from methods.registry import register_addon

WEIGHTS = {"crop": 0.5, "color": 0.5}


def crop_vector(p: torch.Tensor, mirror: torch.Tensor | None = None) -> torch.Tensor:
    """[centre y, centre x, height, width] relative to the image; centre x mirrored where
    ``mirror`` is true (default: where this view was flipped)."""
    h = p[:, IDX["height"]] / p[:, IDX["img_h"]]
    w = p[:, IDX["width"]] / p[:, IDX["img_w"]]
    cy = p[:, IDX["top"]] / p[:, IDX["img_h"]] + h / 2
    cx = p[:, IDX["left"]] / p[:, IDX["img_w"]] + w / 2
    if mirror is None:
        mirror = p[:, IDX["flip"]] > 0
    cx = torch.where(mirror, 1 - cx, cx)
    return torch.stack([cy, cx, h, w], dim=1)


def color_vector(p: torch.Tensor, jitter=JITTER) -> torch.Tensor:
    """Jitter factors centred on identity and divided by the width of their sampling range
    (``jitter``: the strengths the views drew from, the batch's "jitter")."""
    ranges = torch.tensor([2 * float(s) for s in jitter], dtype=p.dtype, device=p.device)
    raw = torch.stack(
        [
            p[:, IDX["brightness"]] - 1,
            p[:, IDX["contrast"]] - 1,
            p[:, IDX["saturation"]] - 1,
            p[:, IDX["hue"]],
        ],
        dim=1,
    )
    return raw / ranges * (p[:, IDX["jitter"]] > 0)[:, None]


def crop_target(pa: torch.Tensor, pb: torch.Tensor, original: bool = False, jitter=None):
    """The crop target of the ordered pair (a, b): both centres mirrored with view a's flip
    (SER's and AugSelf's ``extract_diff``), or (``original``) each with its own flip."""
    if original:
        return crop_vector(pa) - crop_vector(pb)
    mirror = pa[:, IDX["flip"]] > 0
    return crop_vector(pa, mirror) - crop_vector(pb, mirror)


def color_target(pa: torch.Tensor, pb: torch.Tensor, original: bool = False, jitter=JITTER):
    """The colour target of the ordered pair (a, b) (the same either way)."""
    return color_vector(pa, jitter) - color_vector(pb, jitter)


TARGETS = {"crop": crop_target, "color": color_target}


@register_addon("augself")
class AugSelf(AddOn):
    version = 2  # the public SER code's crop targets by default; version 1 = @original
    description = "AugSelf: predict crop and colour-jitter differences between the two views"
    modifier_help = (
        "@layerK @lambdaL (both weights) @depthN (head layers, default 3) @original (each "
        "view's centre mirrored by its own flip, as the AugSelf paper describes; default: both "
        "centres mirrored with view a's flip, as the public SER code)"
    )
    requires = ("aug_params",)
    hidden_width = 512  # the heads' hidden width at paper scale (AugSelf's 512)

    def __init__(
        self,
        base_name: str,
        layer: int | None = None,
        lam: float | None = None,
        depth: int = 3,
        original: bool = False,
    ):
        super().__init__(base_name, layer)
        self.weights = {k: (w if lam is None else lam) for k, w in WEIGHTS.items()}
        self.depth = depth
        self.original = original

    @classmethod
    def parse_modifier(cls, token):
        if token == "original":
            return {"original": True}
        m = re.fullmatch(r"(lambda|depth)([0-9.e-]+)", token)
        if m and m.group(1) == "depth" and m.group(2).isdigit() and int(m.group(2)) >= 1:
            return {"depth": int(m.group(2))}
        if m and m.group(1) == "lambda":
            return {"lam": float(m.group(2))}
        return super().parse_modifier(token)

    def attach(self, method):
        d, h = method.backbone.width, self.width(self.hidden_width)
        self.heads = nn.ModuleDict(
            {k: bn_mlp(2 * d, (h,) * (self.depth - 1), 4, last_bias=True) for k in TARGETS}
        )

    def targets(self, pa: torch.Tensor, pb: torch.Tensor, jitter=JITTER) -> dict:
        """Per target, the 2B×4 regression targets of the orders (a, b) then (b, a)."""
        return {
            k: torch.cat([fn(pa, pb, self.original, jitter), fn(pb, pa, self.original, jitter)])
            for k, fn in TARGETS.items()
        }

    def losses(self, method, batch, online, target, progress):
        ha, hb = self.feature(online[0]), self.feature(online[1])
        pa, pb = batch["params"][0].to(ha.dtype), batch["params"][1].to(ha.dtype)
        x = torch.cat([torch.cat([ha, hb], 1), torch.cat([hb, ha], 1)])
        return {
            f"loss_augself_{k}": self.weights[k] * augself_loss(self.heads[k](x), t)
            for k, t in self.targets(pa, pb, batch.get("jitter", JITTER)).items()
        }
