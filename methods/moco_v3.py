"""MoCo-v3 (Chen et al., 2021), ViT recipe: spec/methods.md §1, SER's launch recipe §8."""

from __future__ import annotations

import torch

from harness.data.augment import BILINEAR
from harness.data.pipelines import SSLAugmentation
from harness.errors import HarnessError
from harness.schedule import cosine
from methods.base import Method
from methods.heads import moco_mlp
from methods.losses import moco_v3_contrastive
from methods.registry import register_base


@register_base("moco_v3")
class MoCoV3(Method):
    description = "MoCo-v3: query/key ViT, 3-layer projector, predictor, momentum encoder"
    # BYOL's asymmetric two views: blur p 1.0 / 0.1, solarize p 0.0 / 0.2.
    augmentation = SSLAugmentation((0.08, 1.0), BILINEAR, (1.0, 0.1), (0.0, 0.2))
    # Head widths at paper scale (MoCo-v3's ViT code: mlp_dim 4096, dim 256).
    hidden_width = 4096
    out_width = 256
    has_target = True
    invariance_views = (2, 6)  # 2 views, or 2+4 (multicrop)
    recipe = {
        "base_lr": 3e-4,
        "lr_batch_scaling": True,
        "min_lr": 0.0,
        "weight_decay": 0.1,
        "warmup_epochs": 10,
        "clip": None,
        "tau": 0.2,
        "momentum": 0.99,
        # With local crops: "public" sums every (query view, other global key) pair, as SER's
        # code; "pairs" rescales that sum by 2/len(pairs), to the two-view loss's weight.
        "multicrop_scale": "public",
    }

    @classmethod
    def backbone_options(cls) -> dict:
        # SER's MoCo-v3 runs learn the positional embedding (MoCo-v3's own code fixes it to
        # sin-cos; ``sincos_pos_embed`` restores that). Table 1's 42.9M counts it.
        return {"moco_init": True, "frozen_patch_embed": True}

    def build_heads(self):
        check_multicrop_scale(self.recipe.get("multicrop_scale", "public"))  # before any step
        d, h, e = self.backbone.width, self.width(self.hidden_width), self.width(self.out_width)
        self.projector = moco_mlp(3, d, h, e)
        self.predictor = moco_mlp(2, e, h, e)

    def build_target(self):
        self.momentum_backbone = self.frozen_copy(self.backbone)
        self.momentum_projector = self.frozen_copy(self.projector)

    def encode_target(self, views, taps):
        return self.encode_views(self.momentum_backbone, views, taps)

    def before_step(self, progress):
        # m rises from m0 to 1 on a half cosine over fractional epochs (--moco-m-cos).
        m = 1 - cosine(1 - self.recipe["momentum"], 0.0, progress.frac_epoch / progress.epochs)
        self.ema(
            [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)], m
        )

    def invariance_loss(self, online, target, progress):
        tau = self.recipe["tau"]
        q = [self.predictor(self.projector(o.cls)) for o in online]
        with torch.no_grad():
            k = [self.momentum_projector(t.cls) for t in target]
        return multicrop_invariance(q, k, tau, self.recipe.get("multicrop_scale", "public"))


MULTICROP_SCALES = ("public", "pairs")


def check_multicrop_scale(scale: str) -> None:
    if scale not in MULTICROP_SCALES:
        raise HarnessError(
            f"recipe.multicrop_scale={scale}: choose one of {', '.join(MULTICROP_SCALES)}"
        )


def multicrop_invariance(q: list, k: list, tau: float, scale: str = "public") -> torch.Tensor:
    """MoCo-v3's L_inv: every view's query against every global key but its own (2 views:
    q1·k2 + q2·k1, summed as MoCo-v3 does). With local crops SER's code (builder/moco.py,
    inv_local4 / erl_local4) keeps summing, over all ten pairs at 2+4; ``scale="pairs"``
    rescales the sum by 2/len(pairs) to the two-pair weight (the harness's earlier loss)."""
    check_multicrop_scale(scale)
    pairs = [(v, g) for v in range(len(q)) for g in range(len(k)) if v != g]
    total = sum(moco_v3_contrastive(q[v], k[g], tau) for v, g in pairs)
    return total * (2 / len(pairs)) if scale == "pairs" else total


def multicrop_scale_effect() -> str:
    """The departure ``moco-v3-multicrop-scale``, measured: L_inv at 2+4 under the switch
    against the default, on fixed float64 tensors (views of 8 images, width 16)."""
    gen = torch.Generator().manual_seed(0)
    q = [torch.randn(8, 16, generator=gen, dtype=torch.float64) for _ in range(6)]
    k = [torch.randn(8, 16, generator=gen, dtype=torch.float64) for _ in range(2)]
    public = multicrop_invariance(q, k, 0.2, "public")
    pairs = multicrop_invariance(q, k, 0.2, "pairs")
    return (
        f"the default L_inv is {float(public / pairs):.2f}× recipe.multicrop_scale=pairs's at "
        f"2+4 (ratio of the losses on fixed tensors; equal at 2 views)"
    )
