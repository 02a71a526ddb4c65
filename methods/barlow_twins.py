"""Barlow Twins (Zbontar et al., 2021): spec/methods.md §3, SER's ViT recipe (ser.md §8)."""

from __future__ import annotations

from harness.data.augment import BICUBIC
from harness.data.views import SSLAugmentation
from methods.base import Method
from methods.heads import barlow_projector
from methods.losses import barlow_twins
from methods.registry import register_base


@register_base("barlow_twins")
class BarlowTwins(Method):
    description = "Barlow Twins: cross-correlation of two views towards the identity"
    augmentation = SSLAugmentation((0.08, 1.0), BICUBIC, (1.0, 0.1), (0.0, 0.2))
    # Projector widths at paper scale (the official 8192-8192-8192).
    projector_widths = (8192, 8192, 8192)
    has_target = False
    recipe = {
        "base_lr": 1e-4,
        "bias_lr": 0.0048,
        "lr_batch_scaling": True,
        "min_lr_frac": 0.001,
        "weight_decay": 1e-6,
        "warmup_epochs": 10,
        "clip": 0.3,
        "lambd": 0.0051,
    }

    def build_heads(self):
        widths = tuple(self.width(w) for w in self.projector_widths)
        self.projector = barlow_projector(self.backbone.width, widths)

    def invariance_loss(self, online, target, progress):
        # The two global views; with local crops, also each local against each global.
        z = [self.projector(o.cls) for o in online]
        pairs = [(0, 1)] + [(g, v) for g in range(2) for v in range(2, len(z))]
        return sum(barlow_twins(z[a], z[b], self.recipe["lambd"]) for a, b in pairs) / len(pairs)

    def param_groups(self):
        # Biases and norm parameters: their own lr, no weight decay (as in the official code).
        weights, others = [], []
        for p in self.trainable_parameters():
            (others if p.ndim == 1 else weights).append(p)
        return [
            {"params": weights, "lr_scale": 1.0, "weight_decay": self.recipe["weight_decay"]},
            {
                "params": others,
                "lr_scale": self.recipe["bias_lr"] / self.recipe["base_lr"],
                "weight_decay": 0.0,
            },
        ]
