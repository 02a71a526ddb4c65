"""Training batches: the epoch order is drawn once per epoch, and caching it changes nothing."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness import config as C
from harness.data.batches import PretrainBatches, build_policy
from harness.data.deferred import finish


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


def _images(n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)), 0)
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "name", ["moco_v3+ser", "dino+ser", "moco_v3+essl", "moco_v3+equimod", "moco_v3+stl"]
)
def test_deferred_views_render_to_the_worker_rendered_ones(name):
    """runtime.gpu_augment: the workers stop at uint8 crops and ``finish`` renders the rest on
    the device. Same draws (parameters bit-identical), same images within the photometric
    tolerance, for every view policy: SER's group-acted pairs, local crops, E-SSL's rotations,
    STL's pairs, EquiMod's clean view."""
    cfg = C.resolve(
        f"{name}@r0.25" if "ser" in name else name, "micro", overrides=["train.batch_size=8"]
    )
    policy = build_policy(C.build_method(cfg), cfg)
    b = PretrainBatches(_images(16), policy, 8, seed=1)
    policy.defer = False
    ref = b[1]
    policy.defer = True
    raw = b[1]
    assert raw["views"][0][0].crops.dtype == torch.uint8
    got = finish(raw)
    for p, q in zip(ref["params"], got["params"]):
        assert torch.equal(p, q)
    pairs = [(x, y) for v, w in zip(ref["views"], got["views"]) for x, y in zip(v, w)]
    for key in ("rotated", "clean"):
        if key in ref:
            pairs.append((ref[key], got[key]))
    assert len(pairs) >= 2
    for x, y in pairs:
        assert x.shape == y.shape and y.dtype == torch.float32
        # PIL rounds down to uint8 after every op and keeps hue in 8 bits; the batched path
        # does neither (tests/data/test_photometric.py: the same bound, and a wrong order,
        # factor or hue sign gives ≥ 0.21).
        assert (x - y).abs().mean() < 0.035, (x - y).abs().mean()


def test_ser_too_small_a_batch_names_a_ratio_that_works():
    import re
    from dataclasses import replace

    from harness.errors import HarnessError

    cfg = C.resolve("moco_v3+ser", "paper")
    policy = build_policy(C.build_method(cfg), cfg)
    for local in (8, 16, 64):
        with pytest.raises(HarnessError) as e:
            policy.n_equiv(local)
        r = float(re.search(r"\+ser@r([0-9.]+)", str(e.value)).group(1))
        at = int(re.search(r"batch of at least (\d+)", str(e.value)).group(1))
        policy.equiv = replace(policy.equiv, ratio=r)
        assert policy.n_equiv(local) >= 2  # the ratio it names works at this batch
        policy.equiv = replace(policy.equiv, ratio=0.01)
        assert policy.n_equiv(at) >= 2 and at <= 250
