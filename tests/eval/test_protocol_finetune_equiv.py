"""The fine-tuning and equivariance protocols against the public rules they follow.

Fine-tuning: DeiT's RASampler (facebookresearch/deit@7e160fe samplers.py), its lr order
(main.py: ``lr_scheduler.step(epoch)`` after training epoch ``epoch``) and its reported number
(``max_accuracy``). Equivariance: the paper's Appendix B.2 score, cos(ρ_{g2·g1⁻¹}(f(g1·x)),
f(g2·x)) over sampled pairs, against a hand computation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from torch.utils.data import Dataset, TensorDataset

from harness.data.loading import SeededDraws
from harness.data.samplers import RepeatedAugSampler, Repeats, selected
from harness.eval import equivariance as eq
from harness.eval import finetune as ft
from harness.model.backbone import Backbone, BackboneConfig
from harness.model.group import D4, Element

SMALL = dict(img_size=16, patch_size=4, width=32, depth=2, heads=2)


# ---- repeated augmentation ------------------------------------------------------------------


def _rasampler(n, epoch, num_replicas=1, rank=0, num_repeats=3):
    """RASampler.__iter__ at deit@7e160fe, written out."""
    num_samples = int(math.ceil(n * num_repeats / num_replicas))
    total_size = num_samples * num_replicas
    num_selected = int(math.floor(n // 256 * 256 / num_replicas))
    g = torch.Generator()
    g.manual_seed(epoch)
    indices = torch.randperm(n, generator=g)
    indices = torch.repeat_interleave(indices, repeats=num_repeats, dim=0).tolist()
    padding = total_size - len(indices)
    if padding > 0:
        indices += indices[:padding]
    indices = indices[rank:total_size:num_replicas]
    return indices[:num_selected]


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_sampler_is_rasampler_for_one_replica_and_gives_deits_global_batches(epoch):
    n = 600
    s = RepeatedAugSampler(n, 3, seed=0)
    s.set_epoch(epoch)
    got = list(s)
    assert got == _rasampler(n, epoch) and len(got) == len(s) == 512
    # W replicas of batch b: DeiT's global batch t is entries [tWb, (t+1)Wb) of one stream.
    for w in (2, 4, 8):
        reps = [_rasampler(n, epoch, w, r) for r in range(w)]
        stream = [reps[r][t] for t in range(len(reps[0])) for r in range(w)]
        assert stream == got
    # Every index three times in a row, an epoch as long as DeiT's.
    assert all(got[3 * t] == got[3 * t + 1] == got[3 * t + 2] for t in range(len(got) // 3))
    counts = torch.bincount(torch.tensor(got), minlength=n)
    assert set(counts.tolist()) <= {0, 2, 3} and counts.sum() == 512


def test_sampler_is_seeded_per_epoch_keys_name_each_repeat_and_small_sets_stay_whole():
    a, b = RepeatedAugSampler(300, 3, seed=7), RepeatedAugSampler(300, 3, seed=7)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = RepeatedAugSampler(300, 3, seed=7, keys=True)
    c.set_epoch(2)
    keys = list(c)
    assert [k % 300 for k in keys] == list(a)
    assert [k // 300 for k in keys] == [j % 3 for j in range(len(keys))]
    assert len(set(keys)) == len(keys) == 256
    # DeiT's rule keeps n // 256 * 256 images (none below 256): the harness keeps them all.
    assert selected(1600) == 1536 and selected(80) == 80 and len(RepeatedAugSampler(80)) == 80


class _Noise(Dataset):
    """Item i: a random draw (the stand-in of an augmentation) and label i."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.rand(3), i


def test_each_repeat_draws_its_own_augmentation():
    draws = SeededDraws(Repeats(_Noise(), 3), seed=0)
    x0, y0 = draws[2]
    x1, y1 = draws[5 + 2]
    assert y0 == y1 == 2 and not torch.equal(x0, x1)
    assert torch.equal(draws[7][0], x1)  # seeded: the same item draws the same again
    r = {**ft.FINETUNE_RECIPE, "batch_size": 3, "repeated_aug": 3}
    loader, aware = ft.train_loader(_Noise(), r, 0, {"num_workers": 0}, "cpu")
    x, y = next(iter(loader))
    assert y.tolist() == [y[0].item()] * 3  # one image, three times, in one batch
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])
    assert len(aware) == 2  # the draws and the sampler follow the epoch


# ---- fine-tuning schedule and report --------------------------------------------------------


def _deit_lrs(epochs, warmup, peak, warmup_lr, min_lr):
    """The lr each epoch trains at in DeiT's main.py loop."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=peak)
    sched = CosineLRScheduler(
        opt, t_initial=epochs, lr_min=min_lr, warmup_t=warmup, warmup_lr_init=warmup_lr
    )
    out = []
    for epoch in range(epochs):
        out.append(opt.param_groups[0]["lr"])  # train_one_epoch
        sched.step(epoch)
    return out


def _stubbed_finetune(monkeypatch, top1s, **recipe):
    lrs, evals = [], []

    def train(model, loader, opt, *args):
        lrs.append(opt.param_groups[0]["lr"])

    def evaluate(*args):
        e = len(evals)
        evals.append(e)
        return {"top1": top1s[e], "top5": 50.0 + e}

    monkeypatch.setattr(ft, "train_one_epoch", train)
    monkeypatch.setattr(ft, "evaluate", evaluate)
    vit = Backbone(BackboneConfig(**SMALL))
    data = TensorDataset(torch.zeros(8, 3, 16, 16), torch.arange(8) % 2)
    r = dict(batch_size=4, runtime={"num_workers": 0}, mixup=0.0, cutmix=0.0, **recipe)
    return ft.finetune(vit, data, data, n_classes=2, **r), lrs, evals


def test_finetune_trains_each_epoch_at_deits_lr(monkeypatch):
    sched = dict(epochs=6, warmup_epochs=2, base_lr=0.05, warmup_lr=1e-6, min_lr=1e-5)
    _, lrs, _ = _stubbed_finetune(monkeypatch, [0.0] * 6, **sched)
    peak = 0.05 * 4 / 512
    assert lrs == pytest.approx(_deit_lrs(6, 2, peak, 1e-6, 1e-5), rel=1e-12)
    # By hand: epochs 0 and 1 at the warm-up start, then timm's lr for e - 1.
    cos2 = 1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * 2 / 6))
    assert lrs[:4] == pytest.approx([1e-6, 1e-6, 1e-6 + (peak - 1e-6) / 2, cos2], rel=1e-12)
    # Without warm-up, epochs 0 and 1 train at the peak.
    _, lrs, _ = _stubbed_finetune(
        monkeypatch, [0.0] * 3, **{**sched, "epochs": 3, "warmup_epochs": 0}
    )
    assert lrs == pytest.approx(_deit_lrs(3, 0, peak, 1e-6, 1e-5), rel=1e-12)
    assert lrs[:2] == pytest.approx([peak, peak], rel=1e-12) and lrs[2] < peak


def test_finetune_reports_the_best_or_the_last_epoch(monkeypatch):
    top1s = [10.0, 30.0, 20.0, 30.0, 5.0]
    m, _, evals = _stubbed_finetune(monkeypatch, top1s, epochs=5, warmup_epochs=1)
    assert m == {"top1": 30.0, "top5": 51.0, "epoch": 1} and len(evals) == 5
    m, _, evals = _stubbed_finetune(monkeypatch, top1s, epochs=5, warmup_epochs=1, report="last")
    assert m == {"top1": 10.0, "top5": 50.0, "epoch": 4} and len(evals) == 1  # evaluated once
    with pytest.raises(ValueError):
        ft.reported([(0, {"top1": 1.0, "top5": 1.0})], "mean")


# ---- sampled equivariance -------------------------------------------------------------------


def _gen(seed):
    return torch.Generator().manual_seed(seed)


W3 = torch.randn(5, 3, 3, 3, generator=_gen(1))  # a 3×3 kernel: no symmetry


def _skewed(x):
    """Works at any size, equivariant to nothing but translations."""
    return torch.tanh(F.conv2d(F.avg_pool2d(x, 4), W3, padding=1))


def _cos(a, b):
    return (
        F.cosine_similarity(a, b, dim=1).mean().item(),
        F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item(),
        F.cosine_similarity(a.mean((2, 3)), b.mean((2, 3)), dim=1).item(),
    )


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def test_pair_scores_match_a_hand_computation():
    x = torch.randn(1, 3, 16, 16, generator=_gen(2))
    base = (4, 4)
    rot = lambda k: Element(D4(0, k), base, base)  # noqa: E731
    cases = {
        # rot90 k=1 then k=3: ρ_g = rot90 by 2 on the tokens of the k=1 view.
        (rot(1), rot(3)): (
            torch.rot90(_skewed(torch.rot90(x, 1, (-2, -1))), 2, (-2, -1)),
            _skewed(torch.rot90(x, 3, (-2, -1))),
        ),
        (Element(D4(1, 0), base, base), Element(D4(0, 0), base, base)): (
            torch.flip(_skewed(torch.flip(x, (-1,))), (-1,)),
            _skewed(x),
        ),
        # Grids 3×5 then 5×4: the 3×5 view's tokens resized to 5×4 against the 5×4 view.
        (Element(D4(), base, (3, 5)), Element(D4(), base, (5, 4))): (
            _resize(_skewed(_resize(x, (12, 20))), (5, 4)),
            _skewed(_resize(x, (20, 16))),
        ),
    }
    for pair, (moved, direct) in cases.items():
        s = eq.pair_scores(_skewed, x, [pair], patch=4)
        want = _cos(moved, direct)
        got = (s["token"].item(), s["flat"].item(), s["pooled"].item())
        assert got == pytest.approx(want, abs=1e-6), pair
        assert want[0] < 0.99


def test_sampled_score_is_one_for_an_equivariant_map_and_seeded():
    w = torch.randn(6, 3, 1, 1, generator=_gen(3))

    def equivariant(x):  # the same map at every token of a patch average: D4-equivariant
        return torch.tanh(F.conv2d(F.avg_pool2d(x, 4), w))

    x = torch.randn(6, 3, 16, 16, generator=_gen(4))
    s = eq.equivariance(equivariant, [x], (4, 4), patch=4, protocol="sampled", seed=0)
    for key in ("equiv_rotation", "equiv_hflip", "equiv_rotation_flat", "equiv_hflip_pooled"):
        assert s[key] == pytest.approx(1.0, abs=1e-6), key
    assert 0 < s["equiv_scale"] <= 1 + 1e-6

    a = eq.equivariance(_skewed, [x], (4, 4), patch=4, seed=0)
    # Batching changes nothing but float rounding.
    assert a == pytest.approx(eq.equivariance(_skewed, [x[:2], x[2:]], (4, 4), patch=4, seed=0))
    assert a != eq.equivariance(_skewed, [x], (4, 4), patch=4, seed=1)
    assert a != eq.equivariance(_skewed, [x], (4, 4), patch=4, protocol="fixed")
    # The mean of the hand-checked pair scores over the seeded pairs.
    for family in ("rotation", "hflip", "scale"):
        (pairs,) = eq.sampled_pairs(family, 0, range(6), (4, 4))
        want = eq.pair_scores(_skewed, x, pairs, patch=4)["token"].double().mean().item()
        assert a[f"equiv_{family}"] == pytest.approx(want, abs=1e-9)
    with pytest.raises(ValueError):
        eq.equivariance(_skewed, [x], (4, 4), patch=4, protocol="random")


def test_sampled_pairs_follow_the_stated_distributions():
    base = (14, 14)
    rot = eq.sampled_pairs("rotation", 0, range(400), base)[0]
    ks = torch.tensor([[g.d.k for g in p] for p in rot])
    assert set(ks.flatten().tolist()) == {0, 1, 2, 3} and all(g.d.flip == 0 for p in rot for g in p)
    flips = torch.tensor(
        [[g.d.flip for g in p] for p in eq.sampled_pairs("hflip", 0, range(400), base)[0]]
    )
    assert (
        0.4 < flips.float().mean() < 0.6 and 0.4 < (flips[:, 0] == flips[:, 1]).float().mean() < 0.6
    )
    for g1, g2 in eq.sampled_pairs("scale", 0, range(400), base)[0]:
        for g in (g1, g2):
            h, w = g.dst
            assert g.d == D4() and g.src == base
            assert 0.7 * 196 - 2 * 15 <= h * w <= 1.3 * 196 + 2 * 15
            assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
    # Two pairs per image are drawn independently.
    two = eq.sampled_pairs("rotation", 0, range(50), base, pairs=2)
    assert two[0] != two[1]
