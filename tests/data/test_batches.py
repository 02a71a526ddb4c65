"""Training batches: the epoch order is drawn once per epoch, and caching it changes nothing."""

import numpy as np
import torch
from PIL import Image

from harness import config as C
from harness.data.batches import PretrainBatches, build_policy


def _batches(n_images=32, batch=8):
    cfg = C.resolve("moco_v3", "micro", overrides=[f"train.batch_size={batch}"])
    policy = build_policy(C.build_method(cfg), cfg)
    rng = np.random.default_rng(0)
    imgs = [
        (Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)), 0)
        for _ in range(n_images)
    ]
    return PretrainBatches(imgs, policy, batch, seed=3)


def test_the_epoch_order_is_drawn_once_per_epoch(monkeypatch):
    batches = _batches()  # 4 steps per epoch
    calls = []
    real = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: calls.append(a) or real(*a, **k))
    got = [batches[s] for s in range(8)]  # two epochs
    assert sum(a[0] == 32 for a in calls) == 2  # the augmentations draw their own small ones
    monkeypatch.setattr(torch, "randperm", real)
    for s in (6, 1, 5):  # out of order, each from a fresh object: the same batches
        fresh = _batches()[s]
        assert all(torch.equal(a, b) for a, b in zip(fresh["views"][0], got[s]["views"][0]))
    # Within an epoch every image is used once.
    order = batches.order(1)
    assert sorted(order.tolist()) == list(range(32))
