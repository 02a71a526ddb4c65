"""AugSelf (Lee et al., 2021; spec/methods.md §4): predict the difference of two views'
augmentation parameters from their concatenated backbone features.

Targets, per ordered pair (a, b): crop = [centre_a − centre_b, size_a − size_b] in image-
relative coordinates, each view's centre x mirrored if that view was flipped; colour = the
difference of jitter factors normalised by their sampling range (zeros if not jittered).
Loss per target = MSE(tanh(head([h_a, h_b])), target), over both orders; weights 0.5 each
(the ImageNet-100 setting). The official ``extract_diff`` mirrors both centres with view a's
flip; here each view's own flip decides, as the paper describes.
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


def crop_vector(p: torch.Tensor) -> torch.Tensor:
    """[centre y, centre x, height, width] relative to the image; x mirrored under flip."""
    h = p[:, IDX["height"]] / p[:, IDX["img_h"]]
    w = p[:, IDX["width"]] / p[:, IDX["img_w"]]
    cy = p[:, IDX["top"]] / p[:, IDX["img_h"]] + h / 2
    cx = p[:, IDX["left"]] / p[:, IDX["img_w"]] + w / 2
    cx = torch.where(p[:, IDX["flip"]] > 0, 1 - cx, cx)
    return torch.stack([cy, cx, h, w], dim=1)


def color_vector(p: torch.Tensor) -> torch.Tensor:
    """Jitter factors centred on identity and divided by the width of their sampling range."""
    ranges = torch.tensor([2 * s for s in JITTER], dtype=p.dtype, device=p.device)
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


TARGETS = {"crop": crop_vector, "color": color_vector}


@register_addon("augself")
class AugSelf(AddOn):
    description = "AugSelf: predict crop and colour-jitter differences between the two views"
    modifier_help = "@layerK @lambdaL (both weights) @depthN (head layers, default 3)"
    requires = ("aug_params",)
    hidden_width = 512  # the heads' hidden width at paper scale (AugSelf's 512)

    def __init__(
        self, base_name: str, layer: int | None = None, lam: float | None = None, depth: int = 3
    ):
        super().__init__(base_name, layer)
        self.weights = {k: (w if lam is None else lam) for k, w in WEIGHTS.items()}
        self.depth = depth

    @classmethod
    def parse_modifier(cls, token):
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

    def losses(self, method, batch, online, target, progress):
        ha, hb = self.feature(online[0]), self.feature(online[1])
        pa, pb = batch["params"][0].to(ha.dtype), batch["params"][1].to(ha.dtype)
        x = torch.cat([torch.cat([ha, hb], 1), torch.cat([hb, ha], 1)])
        out = {}
        for k, fn in TARGETS.items():
            t = fn(pa) - fn(pb)
            out[f"loss_augself_{k}"] = self.weights[k] * augself_loss(
                self.heads[k](x), torch.cat([t, -t])
            )
        return out
