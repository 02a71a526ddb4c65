"""MoCo-v3 (Chen et al., 2021), ViT recipe: spec/methods.md §1, SER's launch recipe §8."""

from __future__ import annotations

import torch

from harness.data.augment import BILINEAR
from harness.data.views import SSLAugmentation
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
    recipe = {
        "base_lr": 3e-4,
        "lr_batch_scaling": True,
        "min_lr": 0.0,
        "weight_decay": 0.1,
        "warmup_epochs": 10,
        "clip": None,
        "tau": 0.2,
        "momentum": 0.99,
    }

    @classmethod
    def backbone_options(cls) -> dict:
        # SER's MoCo-v3 runs learn the positional embedding (MoCo-v3's own code fixes it to
        # sin-cos; ``sincos_pos_embed`` restores that). Table 1's 42.9M counts it.
        return {"moco_init": True, "frozen_patch_embed": True}

    def build_heads(self):
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
        # Every view queries every global key but its own (2 views: q1·k2 + q2·k1, summed as
        # MoCo-v3 does); with local crops the sum is rescaled to the same two-pair weight.
        tau = self.recipe["tau"]
        q = [self.predictor(self.projector(o.cls)) for o in online]
        with torch.no_grad():
            k = [self.momentum_projector(t.cls) for t in target]
        pairs = [(v, g) for g in range(len(k)) for v in range(len(q)) if v != g]
        total = sum(moco_v3_contrastive(q[v], k[g], tau) for v, g in pairs)
        return total * (2 / len(pairs))
