"""DINO (Caron et al., 2021): spec/methods.md §2, SER's launch recipe (ser.md §8)."""

from __future__ import annotations

import numpy as np
import torch

from harness.data.augment import BICUBIC
from harness.data.pipelines import SSLAugmentation
from harness.parallel import dist
from harness.schedule import cosine
from methods.base import Method
from methods.heads import DINOHead
from methods.losses import dino_loss
from methods.registry import register_base


@register_base("dino")
class DINO(Method):
    description = "DINO: self-distillation with a centred, sharpened EMA teacher"
    # SER's DINO runs use no local crops; DINO then advises global scale (0.14, 1).
    augmentation = SSLAugmentation((0.14, 1.0), BICUBIC, (1.0, 0.1), (0.0, 0.2))
    # Head widths at paper scale (DINO's head: 2048 hidden, 256 bottleneck, 65536 prototypes).
    hidden_width = 2048
    bottleneck_width = 256
    out_width = 65536
    has_target = True
    # 2: SER's main_dino.py defaults: teacher temperature 0.04 → 0.07 over 10 epochs
    # (np.linspace, per epoch), min_lr 1e-5.
    version = 2
    invariance_views = (2, 6)  # 2 views, or 2+4 (multicrop)
    recipe = {
        "base_lr": 1e-4,
        "lr_batch_scaling": True,
        "min_lr": 1e-5,
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,
        "warmup_epochs": 10,
        "clip": 0.3,
        "momentum": 0.982,
        "student_temp": 0.1,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.04,
        "warmup_teacher_temp_epochs": 10,
        "center_momentum": 0.9,
        "freeze_last_layer_epochs": 1,
        "norm_last_layer": False,
        "drop_path": 0.1,
    }

    def build_heads(self):
        out = self.width(self.out_width)
        self.head = DINOHead(
            self.backbone.width,
            out,
            self.width(self.hidden_width),
            self.width(self.bottleneck_width),
            self.recipe["norm_last_layer"],
        )
        self.register_buffer("center", torch.zeros(1, out))
        self._batch_center = None

    def build_target(self):
        # The teacher has no stochastic depth.
        self.teacher_backbone = self.frozen_copy(self.backbone, drop_path=0.0)
        self.teacher_head = self.frozen_copy(self.head)

    def eval_backbone(self):
        return self.teacher_backbone

    def encode_target(self, views, taps):
        return self.encode_views(self.teacher_backbone, views, taps)

    def teacher_temp(self, progress) -> float:
        """DINO's schedule, indexed by epoch: np.linspace(warm, target, W) over the first W
        epochs (both ends included: epoch W−1 already has the target), then the target."""
        r = self.recipe
        w = r["warmup_teacher_temp_epochs"]
        if progress.epoch < w:
            return float(
                np.linspace(r["warmup_teacher_temp"], r["teacher_temp"], w)[progress.epoch]
            )
        return r["teacher_temp"]

    def invariance_loss(self, online, target, progress):
        student = [self.head(o.cls) for o in online]
        with torch.no_grad():
            teacher = [self.teacher_head(t.cls) for t in target]
            self._batch_center = dist.all_reduce_mean(torch.cat(teacher).mean(0, keepdim=True))
        return dino_loss(
            student, teacher, self.center, self.recipe["student_temp"], self.teacher_temp(progress)
        )

    def after_step(self, progress):
        if self._batch_center is not None:
            mu = self.recipe["center_momentum"]
            self.center.mul_(mu).add_(self._batch_center, alpha=1 - mu)
            self._batch_center = None
        m = cosine(self.recipe["momentum"], 1.0, progress.it / progress.total)
        self.ema([(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)], m)

    def clip_gradients(self, progress):
        clip = self.recipe["clip"]
        for p in self.trainable_parameters():
            if p.grad is not None and clip:
                norm = p.grad.norm(2)
                p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))
        if progress.epoch < self.recipe["freeze_last_layer_epochs"]:
            for p in self.head.last_layer.parameters():
                p.grad = None

    def param_groups(self):
        decay, no_decay = [], []
        for n, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if n.endswith(".bias") or p.ndim == 1 else decay).append(p)
        return [
            {
                "params": decay,
                "lr_scale": 1.0,
                "weight_decay": self.recipe["weight_decay"],
                "wd_schedule": True,
            },
            {"params": no_decay, "lr_scale": 1.0, "weight_decay": 0.0},
        ]

    def weight_decay(self, progress, group):
        if group.get("wd_schedule"):
            return cosine(
                self.recipe["weight_decay"],
                self.recipe["weight_decay_end"],
                progress.it / progress.total,
            )
        return group["weight_decay"]

    @classmethod
    def backbone_options(cls) -> dict:
        return {"drop_path": cls.recipe["drop_path"]}
