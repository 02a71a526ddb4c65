"""Barlow Twins (Zbontar et al., 2021): spec/methods.md §3, SER's ViT recipe (ser.md §8)."""

from __future__ import annotations

import torch

from harness.data.augment import BICUBIC
from harness.data.pipelines import SSLAugmentation
from methods.base import Method
from methods.heads import barlow_projector
from methods.losses import barlow_twins
from methods.registry import register_base


def clip_per_tensor(params, clip: float) -> None:
    """DINO's clip_gradients: each gradient scaled by min(1, clip / (‖g‖₂ + 1e-6)) on its own."""
    for p in params:
        if p.grad is not None:
            p.grad.mul_(torch.clamp(clip / (p.grad.norm(2) + 1e-6), max=1.0))


@register_base("barlow_twins")
class BarlowTwins(Method):
    description = "Barlow Twins: cross-correlation of two views towards the identity"
    augmentation = SSLAugmentation((0.08, 1.0), BICUBIC, (1.0, 0.1), (0.0, 0.2))
    # Projector widths at paper scale (the official 8192-8192-8192).
    projector_widths = (8192, 8192, 8192)
    has_target = False
    # 2: SER's main_barlowtwins.py for vit_small: one AdamW group, weight decay 0.1,
    # per-tensor clipping at 0.3 (was: a bias group, decay 1e-6, global-norm clipping).
    version = 2
    invariance_views = (2, 6)  # 2 views, or 2+4 (multicrop)
    recipe = {
        "base_lr": 1e-4,
        "lr_batch_scaling": True,
        "min_lr_frac": 0.001,
        # One AdamW group over every parameter, as SER's ViT code (its bias lr is never used).
        "weight_decay": 0.1,
        # true: the official Barlow Twins' bias/norm group at bias_lr, without decay.
        "bias_group": False,
        "bias_lr": 0.0048,
        "warmup_epochs": 10,
        "clip": 0.3,
        # true: per-tensor clipping (DINO's utils.clip_gradients, as SER); false: global norm.
        "clip_per_tensor": True,
        "lambd": 0.0051,
        # true: each rank back-propagates only its share of the cross-correlation (the
        # public code's 1/W gradient on W GPUs); false: the exact gradient.
        "public_grad_scale": False,
    }

    def build_heads(self):
        widths = tuple(self.width(w) for w in self.projector_widths)
        self.projector = barlow_projector(self.backbone.width, widths)

    def invariance_loss(self, online, target, progress):
        # The two global views; with local crops, also each local against each global.
        z = [self.projector(o.cls) for o in online]
        pairs = [(0, 1)] + [(g, v) for g in range(2) for v in range(2, len(z))]
        r = self.recipe
        terms = [
            barlow_twins(z[a], z[b], r["lambd"], r.get("public_grad_scale", False))
            for a, b in pairs
        ]
        return sum(terms) / len(pairs)

    def clip_gradients(self, progress):
        clip = self.recipe.get("clip")
        if clip and self.recipe.get("clip_per_tensor", True):
            clip_per_tensor(self.trainable_parameters(), clip)
        elif clip:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip)

    def param_groups(self):
        if not self.recipe.get("bias_group", False):
            return super().param_groups()
        # The official Barlow Twins: biases and norm parameters at their own lr, no decay.
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
