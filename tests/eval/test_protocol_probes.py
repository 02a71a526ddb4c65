"""SIE's probe protocols (facebookresearch/SIE@54541cf): the MLP probe on raw features and the
per-layer transformation probe on pairs of two different views with the relative
transformation as label."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn as nn

from harness.eval import heads, pairs
from harness.eval import mlp as mlp_eval
from harness.eval import transform_probe as tp
from harness.eval.heads import Standardize, fit_mlp, train_head
from harness.model.group import D4

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- defaults ---------------------------------------------------------------------------------


def test_defaults_are_sies_protocol():
    r = tp.PROBE_RECIPE
    assert (r["head"], r["epochs"], r["schedule"], r["standardize"], r["target"]) == (
        "mlp",
        300,
        "constant",
        False,
        "relative",
    )
    assert (r["lr"], r["batch_size"]) == (1e-3, 256)
    sig = inspect.signature(tp.task_accuracy).parameters
    assert all(sig[k].default == v for k, v in r.items())
    assert mlp_eval.MLP_RECIPE["standardize"] is False
    assert inspect.signature(fit_mlp).parameters["standardize"].default is False
    assert mlp_eval.VERSION >= 2 and tp.VERSION >= 3


# ---- relative labels and pairs ----------------------------------------------------------------


def test_relative_labels_against_the_rule_and_the_group():
    c1 = torch.tensor([0, 1, 2, 3, 3, 0, 2, 1])
    c2 = torch.tensor([0, 3, 0, 1, 3, 2, 1, 2])
    expected = [0, 2, 2, 2, 0, 2, 3, 1]  # (k2 - k1) mod 4 written out
    assert tp.relative_labels(c1, c2, 4).tolist() == expected
    b1, b2 = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    assert tp.relative_labels(b1, b2, 2).tolist() == [0, 1, 1, 0]  # b1 xor b2
    # Both equal the class of g2·g1⁻¹ composed in D4.
    for elements in tp.TASKS.values():
        n = len(elements)
        for i in range(n):
            for j in range(n):
                rel = elements[j] * elements[i].inverse()
                label = tp.relative_labels(torch.tensor([i]), torch.tensor([j]), n).item()
                assert elements[label] == rel
    assert tp.TASKS["rotation"] == [D4(0, k) for k in range(4)]
    assert tp.TASKS["hflip"] == [D4(0, 0), D4(1, 0)]


def test_pairs_are_two_views_of_one_image_and_uniform():
    n, N = 4, 5
    feats = torch.tensor([[[10.0 * c + i, -i] for i in range(N)] for c in range(n)])  # n×N×2
    feats_b = feats + 1000.0
    c1, c2 = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([3, 1, 0, 2, 2])
    x = tp.pair_inputs(feats, feats_b, c1, c2)
    for i in range(N):
        assert x[i].tolist() == [*feats[c1[i], i].tolist(), *feats_b[c2[i], i].tolist()]
    a, b = tp.draw_pairs(40_000, 4, _gen(1))
    share = torch.bincount(tp.relative_labels(a, b, 4), minlength=4).float() / 40_000
    assert torch.allclose(share, torch.full((4,), 0.25), atol=0.01)


def test_the_head_sees_raw_pairs_one_per_image_per_epoch(monkeypatch):
    # Features encode (image, class) so every training input can be read back exactly.
    n, N = 4, 12
    train = [
        torch.stack([torch.full((N,), float(c)), torch.arange(N) * 100.0], 1) for c in range(n)
    ]
    # View B: class c reads 10 + c, image i 100·i + 1.
    train_b = [t + torch.tensor([10.0, 1.0]) for t in train]
    seen = []

    class Recording(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return self.inner(x)

    make = tp.make_head
    monkeypatch.setattr(tp, "make_head", lambda *a, **k: Recording(make(*a, **k)))
    labels = []
    real_shuffled = tp.shuffled

    def spy(x, y, batch_size, g):
        labels.append(y.clone())
        return real_shuffled(x, y, batch_size, g)

    monkeypatch.setattr(pairs, "shuffled", spy)  # relative_epochs' batcher
    kw = dict(epochs=2, batch_size=5, seeds=1, hidden=8, train_b=train_b, test_b=train_b)
    tp.task_accuracy(train, train, **kw)
    assert len(labels) == 2
    per_epoch = [torch.cat(seen[:3]), torch.cat(seen[3:])]  # 12 pairs in batches of 5
    for x in per_epoch:
        assert x.shape == (N, 4)
        assert sorted((x[:, 1] / 100).tolist()) == list(range(N))  # one pair per image
        assert torch.equal(x[:, 1] + 1, x[:, 3])  # both halves are the same image ...
        assert set(x[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}  # ... view A first, raw
        assert set(x[:, 2].tolist()) <= {10.0, 11.0, 12.0, 13.0}  # ... then view B, raw
    # The labels handed to the loop are (c2 - c1) mod 4 of the pairs drawn for that epoch:
    # re-draw them with the seed's generator as task_accuracy does.
    g = _gen(0)
    for y in labels:
        a, b = tp.draw_pairs(N, n, g)
        assert torch.equal(y, (b - a) % 4)
        torch.randperm(N, generator=g)  # the epoch's shuffle
    # The relative target has no second view to fall back on.
    with pytest.raises(ValueError, match="train_b"):
        tp.task_accuracy(train, train, epochs=1, seeds=1, hidden=4)
    narrow = [t[:, :1] for t in train_b]
    with pytest.raises(ValueError, match="do not match"):
        tp.task_accuracy(train, train, epochs=1, seeds=1, hidden=4, train_b=narrow, test_b=narrow)


def test_test_pairs_are_fixed_and_the_probe_is_deterministic():
    g = _gen(2)
    train = [torch.randn(32, 3, generator=g) for _ in range(2)]
    test = [torch.randn(16, 3, generator=g) for _ in range(2)]
    kw = dict(epochs=3, batch_size=16, seeds=2, hidden=8, train_b=train, test_b=test)
    assert tp.task_accuracy(train, test, **kw) == tp.task_accuracy(train, test, **kw)
    a = tp.draw_pairs(16, 2, _gen(tp.TEST_PAIR_SEED))
    b = tp.draw_pairs(16, 2, _gen(tp.TEST_PAIR_SEED))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


# ---- the second view -------------------------------------------------------------------------


class _SameImage(torch.utils.data.Dataset):
    """``n`` copies of one PIL image (a gradient, so every crop looks different)."""

    def __init__(self, n, transform):
        from PIL import Image

        yy, xx = torch.meshgrid(torch.arange(40), torch.arange(56), indexing="ij")
        rgb = torch.stack([xx * 4, yy * 6, (xx * yy) % 256], -1).to(torch.uint8)
        self.image, self.n, self.transform = Image.fromarray(rgb.numpy()), n, transform

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(self.image), i


def test_the_second_view_is_one_seeded_square_crop_per_image():
    tf = tp.second_view_transform(16)
    crop = tf.transforms[0]
    assert (crop.scale, crop.ratio, crop.size) == (tp.SECOND_VIEW_SCALE, (1.0, 1.0), (16, 16))
    view = tp.second_view(_SameImage(6, tf), "train")
    torch.manual_seed(123)  # the global RNG plays no part
    first = [view[i][0] for i in range(6)]
    torch.manual_seed(456)
    again = [tp.second_view(_SameImage(6, tf), "train")[i][0] for i in reversed(range(6))][::-1]
    assert all(a.shape == (3, 16, 16) for a in first)
    # Same image, same crop, in any order and any run ...
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # ... one image's copies at other indices get other crops, and other splits others.
    assert all(not torch.equal(first[i], first[j]) for i in range(6) for j in range(i))
    val = tp.second_view(_SameImage(6, tf), "val")
    assert not any(torch.equal(first[i], val[i][0]) for i in range(6))
    # Not the centre crop of the first view.
    centre = tp.WithTransform(_SameImage(1, lambda x: x), tp.eval_transform(16, 18))[0][0]
    assert not any(torch.equal(a, centre) for a in first)


# ---- what each target learns ------------------------------------------------------------------


def _phase_features(n_images, n, g):
    """Each image at a random phase θ; under class c view A's feature is the angle
    θ + 2πc/n, view B's the angle θ + ε + 2πc/n (ε ~ 0.15·N(0, 1), its own crop) at a radius
    of its own (B's content, which says nothing): one view says nothing about c, two views
    give c2 - c1, and the halves are never equal."""
    th = torch.rand(n_images, generator=g) * 2 * math.pi
    eps = 0.15 * torch.randn(n_images, generator=g)
    radius = 0.5 + torch.rand(n_images, 1, generator=g)

    def angle(a):
        return torch.stack([torch.cos(a), torch.sin(a)], 1)

    a = [angle(th + 2 * math.pi * c / n) for c in range(n)]
    b = [radius * angle(th + eps + 2 * math.pi * c / n) for c in range(n)]
    return a, b


def test_only_relative_information_is_learned_under_target_relative():
    # Only g2·g1⁻¹ is decodable, from two different views: learned.
    g = _gen(3)
    (train, train_b), (test, test_b) = _phase_features(128, 4, g), _phase_features(128, 4, g)
    kw = dict(epochs=30, batch_size=64, lr=1e-2, seeds=1, hidden=64)
    rel, _ = tp.task_accuracy(train, test, target="relative", train_b=train_b, test_b=test_b, **kw)
    ab, _ = tp.task_accuracy(train, test, target="absolute", **kw)
    # Relative: well above the 50 % that spotting g1 = g2 alone would give.
    assert rel > 95.0
    assert ab < 35.0


def test_no_shortcut_when_the_views_differ_but_say_nothing_about_g():
    # Features of an image's content plus noise per (image, view, element): no information
    # about g. Two different views: chance. The same view in both halves (version 2):
    # pairs with g1 = g2 have identical halves, which a head detects.
    g = _gen(9)
    kw = dict(epochs=40, batch_size=64, seeds=1, hidden=64)
    for n, chance, shortcut in ((4, 25.0, 40.0), (2, 50.0, 90.0)):
        (tr_a, tr_b), (te_a, te_b) = (pairs._uninformative_views(n, m, 8, g) for m in (256, 1024))
        tr_a, tr_b, te_a, te_b = (list(v) for v in (tr_a, tr_b, te_a, te_b))
        two, _ = tp.task_accuracy(tr_a, te_a, train_b=tr_b, test_b=te_b, **kw)
        one, _ = tp.task_accuracy(tr_a, te_a, train_b=tr_a, test_b=te_a, **kw)
        assert abs(two - chance) < 6.0, (n, two)
        assert one > shortcut, (n, one)


def test_absolute_information_alone_is_learned_under_target_absolute():
    # Each class its own fixed direction, no image identity: one view tells c.
    g = _gen(4)
    train = [torch.eye(4)[c] * 3 + 0.1 * torch.randn(64, 4, generator=g) for c in range(4)]
    test = [torch.eye(4)[c] * 3 + 0.1 * torch.randn(32, 4, generator=g) for c in range(4)]
    kw = dict(batch_size=32, lr=1e-2, seeds=1, hidden=32)
    assert tp.task_accuracy(train, test, epochs=10, target="absolute", **kw)[0] > 99.0
    # Two such views also give c2 - c1 (a function of the pair the head has to learn).
    train_b = [t + 0.1 * torch.randn(t.shape, generator=g) for t in train]
    test_b = [t + 0.1 * torch.randn(t.shape, generator=g) for t in test]
    rel = tp.task_accuracy(train, test, epochs=60, train_b=train_b, test_b=test_b, **kw)
    assert rel[0] > 95.0


def test_identical_halves_shortcut_is_measured():
    line = pairs.equality_shortcut()
    assert "\n" not in line
    nums = [float(w) for w in line.replace("%", " ").replace("(", " ").split() if _num(w)]
    rot_two, rot_one, rot_abs, _, flip_two, flip_one, flip_abs, _ = nums
    # Two views (the protocol): chance. One view in both halves (v2): the shortcut.
    assert abs(rot_two - 25) < 5 and abs(flip_two - 50) < 5
    assert rot_one > 40 and flip_one > 90
    assert rot_abs < 30 and flip_abs < 55
    assert "\n" not in pairs.pair_draw_effect(1000) and "\n" not in mlp_eval.standardize_effect()


def _num(w):
    try:
        float(w)
    except ValueError:
        return False
    return True


# ---- raw features, schedules ------------------------------------------------------------------


def _first_linear_input(head, x):
    got = []
    first = next(m for m in head.modules() if isinstance(m, nn.Linear))
    h = first.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().clone()))
    head(x)
    h.remove()
    return got[0]


def test_standardize_false_feeds_raw_features():
    g = _gen(5)
    x = torch.randn(40, 6, generator=g) * 1e-2 + 3.0
    y = torch.arange(40) % 2
    raw = fit_mlp(x, y, 2, epochs=1, batch_size=16, hidden=8)
    assert not any(isinstance(m, Standardize) for m in raw.modules())
    assert torch.equal(_first_linear_input(raw, x), x)
    std = fit_mlp(x, y, 2, epochs=1, batch_size=16, hidden=8, standardize=True)
    seen = _first_linear_input(std, x)
    assert torch.allclose(seen.mean(0), torch.zeros(6), atol=1e-3)
    assert torch.allclose(seen.std(0), torch.ones(6), atol=1e-2)


def test_transform_probe_standardize_switch(monkeypatch):
    inputs = []
    real = tp.train_head

    def spy(model, epoch, *a, **k):
        inputs.append(next(iter(epoch()))[0])
        return real(model, epoch, *a, **k)

    monkeypatch.setattr(tp, "train_head", spy)
    train = [torch.full((8, 3), 5.0 + c) for c in range(2)]
    train_b = [torch.full((8, 3), 7.0 + 2 * c) for c in range(2)]
    kw = dict(epochs=1, seeds=1, hidden=4, train_b=train_b, test_b=train_b)
    for standardize in (False, True):
        tp.task_accuracy(train, train, standardize=standardize, **kw)
    raw, std = inputs
    assert set(raw[:, :3].flatten().tolist()) <= {5.0, 6.0}
    assert set(raw[:, 3:].flatten().tolist()) <= {7.0, 9.0}
    # Each view by its own training features' statistics (pooled ones would not centre them).
    z = 0.5 / torch.cat(train).std(0)[0]
    assert torch.allclose(std.abs(), z.expand_as(std), atol=1e-4)


def _record_lrs(monkeypatch):
    lrs = []

    class Recording(torch.optim.Adam):
        def step(self, *a, **k):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)

    monkeypatch.setattr(heads.torch.optim, "Adam", Recording)
    return lrs


def test_constant_schedule_keeps_the_lr_fixed(monkeypatch):
    lrs = _record_lrs(monkeypatch)
    x, y = torch.randn(20, 3, generator=_gen(6)), torch.arange(20) % 2
    batches = heads.shuffled(x, y, 5, _gen(0))
    train_head(nn.Linear(3, 2), batches, 6, 0.01, schedule="constant")
    assert lrs == [0.01] * 24
    lrs.clear()
    train_head(nn.Linear(3, 2), batches, 6, 0.01, schedule="cosine")
    assert lrs[0] == 0.01 and lrs[-1] < 0.001 and lrs == sorted(lrs, reverse=True)
    with pytest.raises(ValueError):
        train_head(nn.Linear(3, 2), batches, 1, 0.01, schedule="step")
    # The transformation probe's default is constant.
    lrs.clear()
    train = [torch.randn(10, 3, generator=_gen(7)) for _ in range(2)]
    tp.task_accuracy(
        train, train, epochs=3, batch_size=4, seeds=1, hidden=4, train_b=train, test_b=train
    )
    assert len(lrs) == 9 and set(lrs) == {1e-3}
    with pytest.raises(ValueError):
        tp.task_accuracy(train, train, epochs=1, seeds=1, hidden=4, target="both")
