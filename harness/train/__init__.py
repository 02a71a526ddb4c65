"""Pretraining: the loop, its schedules, preemption and tracking."""

from harness.train.loop import lr_at, pretrain

__all__ = ["lr_at", "pretrain"]
