"""Shared evaluators: each metric against an independent reference or a hand-computed value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from harness import config as C
from harness.eval import features as feat
from harness.eval import robustness as rob
from harness.eval.equivariance import backbone_encoder, equivariance
from harness.eval.finetune import finetune
from harness.eval.heads import mlp_head
from harness.eval.iebench_probes import classify_objects
from harness.eval.knn import knn_classify, knn_scores
from harness.eval.metrics import topk
from harness.eval.mlp import mlp_probe
from harness.eval.registry import evaluator
from harness.eval.sweep import fit_linear
from harness.eval.transform_probe import task_accuracy
from harness.model.backbone import Backbone, BackboneConfig

SMALL = dict(img_size=16, patch_size=4, width=32, depth=4, heads=2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- k-NN -----------------------------------------------------------------------------------


def _brute_knn(train_x, train_y, test_x, k, temperature):
    """DINO's weighted vote written out one query at a time."""

    def unit(v):
        return [float(a) / math.sqrt(sum(float(b) ** 2 for b in v)) for a in v]

    train = [unit(v) for v in train_x]
    rankings = []
    for q in (unit(v) for v in test_x):
        sims = sorted(
            ((sum(a * b for a, b in zip(q, t)), int(y)) for t, y in zip(train, train_y)),
            key=lambda s: -s[0],
        )
        votes = {}
        for s, y in sims[:k]:
            votes[y] = votes.get(y, 0.0) + math.exp(s / temperature)
        rankings.append(sorted(votes, key=lambda c: -votes[c]))
    return rankings


def test_knn_matches_brute_force_vote():
    g = _gen()
    train_x, test_x = torch.randn(150, 12, generator=g), torch.randn(40, 12, generator=g)
    train_y = torch.randint(0, 9, (150,), generator=g)
    test_y = torch.randint(0, 9, (40,), generator=g)
    rankings = _brute_knn(train_x, train_y, test_x, k=20, temperature=0.07)
    scores = knn_scores(train_x, train_y, test_x, 9, k=20, temperature=0.07, chunk=7)
    assert scores.argmax(1).tolist() == [r[0] for r in rankings]
    m = knn_classify(train_x, train_y, test_x, test_y, 9, k=20, temperature=0.07, chunk=7)
    ref1 = 100.0 * sum(r[0] == y for r, y in zip(rankings, test_y.tolist())) / 40
    ref5 = 100.0 * sum(y in r[:5] for r, y in zip(rankings, test_y.tolist())) / 40
    assert m["top1"] == pytest.approx(ref1) and m["top5"] == pytest.approx(ref5)
    assert ref5 > ref1  # the fixture exercises the top-5 path


# ---- linear probe ---------------------------------------------------------------------------


def test_linear_probe_matches_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = _gen(1)
    means = 0.6 * torch.randn(5, 16, generator=g)  # Gaussian clusters, ~87 % separable

    def sample(n):
        y = torch.randint(0, 5, (n,), generator=g)
        return means[y] + torch.randn(n, 16, generator=g), y

    (tx, ty), (vx, vy) = sample(1000), sample(2000)
    head = fit_linear(tx, ty, 5, epochs=30, batch_size=128, base_lr=1.0, quiet=True)
    with torch.no_grad():
        ours = topk(head(vx), vy)["top1"]
    ref = sklearn.LogisticRegression(max_iter=2000).fit(tx.numpy(), ty.numpy())
    theirs = 100.0 * float((ref.predict(vx.numpy()) == vy.numpy()).mean())
    assert 70 < theirs < 99
    assert abs(ours - theirs) <= 1.0


# ---- ImageNet-C -----------------------------------------------------------------------------

# Typed from spec/evals.md §2.5, in canonical order.
ALEXNET_MEANS = [
    0.886428,
    0.894468,
    0.922640,
    0.819880,
    0.826268,
    0.785948,
    0.798360,
    0.866816,
    0.826572,
    0.819324,
    0.564592,
    0.853204,
    0.646056,
    0.717840,
    0.606500,
]


def test_alexnet_constants_and_severity_rows_agree():
    assert [rob.ALEXNET_ERR[c] for c in rob.CORRUPTIONS] == ALEXNET_MEANS
    for c, row in rob.ALEXNET_ERR_BY_SEVERITY.items():
        assert sum(row) / 5 == pytest.approx(rob.ALEXNET_ERR[c], abs=1e-6)


def test_mce_and_relative_mce_by_hand():
    errors = {"gaussian_noise": [0.5, 0.6, 0.7, 0.8, 0.9], "brightness": [0.2, 0.3, 0.4, 0.5, 0.6]}
    m = rob.mce(errors, corruptions=("gaussian_noise", "brightness"))
    assert m["gaussian_noise/ce"] == pytest.approx(100 * 0.7 / 0.886428)
    assert m["mCE"] == pytest.approx((100 * 0.7 / 0.886428 + 100 * 0.4 / 0.564592) / 2)
    r = rob.relative_mce(errors, clean_error=0.25, corruptions=("gaussian_noise", "brightness"))
    assert r["relative_mCE"] == pytest.approx(
        (100 * 0.45 / (0.886428 - 0.4348) + 100 * 0.15 / (0.564592 - 0.4348)) / 2
    )
    # All 15: every error 0.5 → mCE = (100/15) Σ_c 0.5 / AlexNet_c.
    flat = {c: [0.5] * 5 for c in rob.CORRUPTIONS}
    assert rob.mce(flat)["mCE"] == pytest.approx(100 / 15 * sum(0.5 / a for a in ALEXNET_MEANS))


def test_imagenet_c_summary_averages_severities_then_corruptions():
    top1 = {
        c: [80.0, 70.0, 60.0, 50.0, 40.0] if i % 2 else [50.0] * 5
        for i, c in enumerate(rob.CORRUPTIONS)
    }
    s = rob.imagenet_c_summary(top1, clean_top1=75.0)
    assert s["shot_noise/top1"] == 60.0 and s["gaussian_noise/top1"] == 50.0
    assert s["avg/top1"] == pytest.approx((7 * 60 + 8 * 50) / 15)
    assert s["gaussian_noise/ce"] == pytest.approx(100 * 0.5 / 0.886428)
    assert s["shot_noise/relative_ce"] == pytest.approx(100 * (0.4 - 0.25) / (0.894468 - 0.4348))


# ---- ImageNet-P -----------------------------------------------------------------------------


def test_flip_probability_by_hand():
    preds = torch.tensor([[3, 3, 5, 3, 5]])
    # Noise: each frame against frame 0 → 0,1,0,1.
    assert rob.flip_probability(preds, noise=True).item() == pytest.approx(0.5)
    # Others: consecutive frames → 0,1,1,1.
    assert rob.flip_probability(preds, noise=False).item() == pytest.approx(0.75)
    # Stride 2: (0→2, 2→4) and (1→3) → 1,0,0.
    assert rob.flip_probability(preds, noise=False, stride=2).item() == pytest.approx(1 / 3)
    # Noise ignores the stride (difficulty picks other folders instead).
    assert rob.flip_probability(preds, noise=True, stride=2).item() == pytest.approx(0.5)


def test_top5_distance_by_hand():
    c = 8
    f0 = torch.arange(c, 0, -1).float()  # class i has rank i+1
    f1 = f0.clone()
    f1[[0, 1]] = f1[[1, 0]]  # classes 0 and 1 swap
    f2 = torch.tensor([0.5, 8, 7, 6, 5, 4, 3, 2])  # class 0 falls to rank 8
    logits = torch.stack([f0, f1, f2])[None]
    # f0→f1: σ = (2, 1, 3, 4, 5) → 2.  f0→f2: σ = (8, 1, 2, 3, 4) → 5 + 4 = 9.
    # f1→f2: f1's top-5 is classes (1, 0, 2, 3, 4), ranked (1, 8, 2, 3, 4) in f2 → 0+4+1+1+1 = 7.
    assert rob.rank_distances(logits, noise=True)["top5"].item() == pytest.approx((2 + 9) / 2)
    assert rob.rank_distances(logits, noise=False)["top5"].item() == pytest.approx((2 + 7) / 2)
    m = rob.imagenet_p_metrics(logits, torch.tensor([0]), "rotate")
    assert m["top5_dist"] == pytest.approx(4.5)
    assert m["flip_prob"] == pytest.approx(50.0)  # argmax 0, 1, 1
    assert m["top1"] == pytest.approx(100 / 3)


def _official(logits: np.ndarray, noise: bool, difficulty: int):
    """hendrycks/robustness ImageNet-P/test.py's flip_prob and ranking_dist, transcribed."""
    from scipy.stats import rankdata

    cum = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (logits.shape[-1] - 6)))
    recip = 1.0 / np.arange(1, logits.shape[-1] + 1)
    step = 1 if noise else difficulty
    fp, t5, zipf = 0.0, 0.0, 0.0
    for vid in logits:
        preds = vid.argmax(1)
        ranks = [rankdata(-f, method="ordinal").astype(int) for f in vid]
        flips, d5, dz = [], [], []
        for i in range(step):
            prev, perm1 = preds[i], ranks[i]
            inv = np.argsort(perm1)
            for pred, perm2 in zip(preds[i::step][1:], ranks[i::step][1:]):
                flips.append(int(prev != pred))
                sigma = perm2[inv]
                d5.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
                dz.append(np.sum(np.abs(recip - recip[sigma - 1]) * recip))
                if not noise:
                    prev, perm1, inv = pred, perm2, np.argsort(perm2)
        fp += np.mean(flips) / len(logits)
        t5 += np.mean(d5) / len(logits)
        zipf += np.mean(dz) / len(logits)
    return fp, t5, zipf


@pytest.mark.parametrize("noise,difficulty", [(True, 1), (False, 1), (False, 3)])
def test_imagenet_p_matches_official_code(noise, difficulty):
    pytest.importorskip("scipy")
    g = _gen(2)
    # Integer logits: many ties, so the ordinal tie-break is exercised too.
    logits = torch.randint(0, 6, (5, 11, 20), generator=g).float()
    fp, t5, zipf = _official(logits.numpy(), noise, difficulty)
    ours_fp = rob.flip_probability(logits.argmax(-1), noise, difficulty).mean().item()
    dist = rob.rank_distances(logits, noise, difficulty)
    assert ours_fp == pytest.approx(fp)
    assert dist["top5"].mean().item() == pytest.approx(t5)
    assert dist["zipf"].mean().item() == pytest.approx(zipf)


def test_frame_topk_counts_frames():
    logits = torch.zeros(2, 3, 4)
    logits[0, :, 1] = 1  # video 0 (label 1): all frames right
    logits[1, 0, 2] = 1  # video 1 (label 2): only the clean frame 0
    logits[1, 1:, 3] = 1
    labels = torch.tensor([1, 2])
    assert rob.frame_topk(logits, labels)["top1"] == pytest.approx(400 / 6)
    assert rob.frame_topk(logits, labels, drop_first=True)["top1"] == pytest.approx(50.0)


# ---- equivariance ---------------------------------------------------------------------------


def test_equivariance_is_one_for_an_equivariant_map():
    g = _gen(3)
    w, b = torch.randn(6, 3, 1, 1, generator=g), torch.randn(6, generator=g)

    # Patch averaging then the same nonlinear map at every token: exactly D4-equivariant.
    def encode(x):
        return torch.tanh(F.conv2d(F.avg_pool2d(x, 4), w, b))

    s = equivariance(encode, [torch.randn(6, 3, 16, 16, generator=g)], (4, 4), patch=4)
    for key in ("equiv_rotation", "equiv_hflip", "equiv_rotation_flat", "equiv_hflip_pooled"):
        assert s[key] == pytest.approx(1.0, abs=1e-6), key
    assert 0 < s["equiv_scale"] <= 1


def test_equivariance_of_a_random_vit_is_clearly_below_one():
    torch.manual_seed(0)
    vit = Backbone(BackboneConfig(**SMALL)).eval()
    s = equivariance(
        backbone_encoder(vit), [torch.randn(6, 3, 16, 16, generator=_gen(4))], (4, 4), patch=4
    )
    assert s["equiv_rotation"] < 0.9 and s["equiv_hflip"] < 0.9 and s["equiv_scale"] < 0.9


def test_equivariance_sees_an_absolute_position_code():
    """A position code added to every map does not move with ρ: the token score drops, the
    pooled (ρ-invariant) one does not."""
    g = _gen(5)
    w = torch.randn(6, 3, 1, 1, generator=g)
    pos = torch.randn(1, 6, 4, 4, generator=g)

    def encode(x):
        return F.conv2d(F.avg_pool2d(x, 4), w) + 5 * pos

    s = equivariance(encode, [torch.randn(6, 3, 16, 16, generator=g)], (4, 4), patch=4, areas=())
    assert s["equiv_rotation"] < 0.9 and s["equiv_rotation_pooled"] > 0.95


# ---- transformation probe -------------------------------------------------------------------


def test_transform_probe_perfect_and_constant_features():
    g = _gen(6)
    eye = torch.eye(4) * 3
    perfect_train = [eye[c] + 0.1 * torch.randn(40, 4, generator=g) for c in range(4)]
    perfect_test = [eye[c] + 0.1 * torch.randn(20, 4, generator=g) for c in range(4)]
    # The single-image protocol (tests/eval/test_protocol_probes.py covers the relative one).
    quick = dict(epochs=10, batch_size=16, lr=1e-2, target="absolute", hidden=64)
    acc, std = task_accuracy(perfect_train, perfect_test, seeds=2, **quick)
    assert acc >= 99.0 and std >= 0
    const = [torch.ones(40, 4) for _ in range(4)]
    acc, _ = task_accuracy(const, [torch.ones(20, 4) for _ in range(4)], seeds=1, **quick)
    assert acc == pytest.approx(25.0, abs=1.0)
    acc, _ = task_accuracy(const[:2], [torch.ones(20, 4)] * 2, seeds=1, **quick)
    assert acc == pytest.approx(50.0, abs=1.0)


# ---- feature cache --------------------------------------------------------------------------


def test_feature_cache_skips_the_backbone_and_keys_on_layers(tmp_path):
    torch.manual_seed(0)
    vit = Backbone(BackboneConfig(**SMALL)).eval()
    calls = []
    vit.register_forward_pre_hook(lambda m, a: calls.append(1))
    data = TensorDataset(torch.randn(10, 3, 16, 16, generator=_gen(7)), torch.arange(10) % 3)
    kw = dict(
        model_id="ckpt:1", dataset_id="toy", split="train", n_last=2, transform="id", batch_size=4
    )
    first = feat.cached_features(vit, data, tmp_path, layers=(1, 3), **kw)
    n = len(calls)
    assert n == 3 and first["cls"].shape == (10, 64) and first["layers"][3].shape == (10, 32)
    second = feat.cached_features(vit, data, tmp_path, layers=(3, 1), **kw)
    assert len(calls) == n  # read back, no forward
    assert torch.equal(first["cls"], second["cls"])
    assert torch.equal(first["labels"], second["labels"])
    assert all(torch.equal(first["layers"][l], second["layers"][l]) for l in (1, 3))
    third = feat.cached_features(vit, data, tmp_path, layers=(1, 2), **kw)
    assert len(calls) == 2 * n and set(third["layers"]) == {1, 2}
    feat.cached_features(vit, data, tmp_path, layers=(1, 3), **{**kw, "model_id": "ckpt:2"})
    assert len(calls) == 3 * n
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files
    # The cached [CLS] is the backbone's own output.
    assert torch.allclose(first["cls"][:4], vit(data.tensors[0][:4], n_last=2).cls)


# ---- 3DIEBench ------------------------------------------------------------------------------


def test_3diebench_classification_on_separable_views():
    g = _gen(10)
    labels = torch.arange(30) % 3
    feats = 4 * F.one_hot(labels, 3).float()[:, None] + 0.3 * torch.randn(30, 5, 3, generator=g)
    m = classify_objects(
        feats, labels, feats, labels, n_classes=3, epochs=30, batch_size=8, lr=1e-2
    )
    assert m["top1"] == pytest.approx(100.0)


# ---- MLP probe ------------------------------------------------------------------------------


def test_mlp_probe_is_three_layers_and_learns_what_a_linear_head_cannot():
    head = mlp_head(7, 3)
    assert [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [1024, 1024, 3]
    g = _gen(11)
    x = torch.rand(600, 2, generator=g) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()  # XOR: no linear separator
    m = mlp_probe(x[:400], y[:400], x[400:], y[400:], 2, epochs=40, hidden=64)
    lin = fit_linear(x[:400], y[:400], 2, epochs=40, batch_size=64, base_lr=0.5, quiet=True)
    with torch.no_grad():
        linear_acc = topk(lin(x[400:]), y[400:], ks=(1,))["top1"]
    assert m["top1"] > 90 and linear_acc < 75


def test_mlp_probe_does_not_depend_on_the_feature_scale():
    # Standardised inputs (mlp.standardize=true, the named alternative): features 1000×
    # smaller (as a small model's [CLS] can be) give the same probe; raw (the default, SIE's),
    # Adam at lr 1e-3 barely moves on them in the same epochs.
    g = _gen(13)
    x = torch.rand(600, 2, generator=g) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()

    def probe(scale, **kw):
        return mlp_probe(
            x[:400] * scale, y[:400], x[400:] * scale, y[400:], 2, epochs=20, hidden=64, **kw
        )

    big, small, raw = probe(1.0, standardize=True), probe(1e-3, standardize=True), probe(1e-3)
    assert big["top1"] > 90 and small["top1"] == pytest.approx(big["top1"], abs=2)
    assert raw["top1"] < 75


# ---- fine-tuning ----------------------------------------------------------------------------


def test_finetune_learns_and_leaves_the_pretrained_backbone_alone():
    torch.manual_seed(0)
    vit = Backbone(BackboneConfig(**{**SMALL, "depth": 2}))
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    y = torch.arange(32) % 2
    noise = 0.3 * torch.randn(32, 3, 16, 16, generator=_gen(12))
    x = (y.float() * 2 - 1)[:, None, None, None] + noise  # bright vs dark images
    data = TensorDataset(x, y)
    tiny = dict(
        epochs=8,
        batch_size=8,
        base_lr=2e-3,
        warmup_epochs=1,
        runtime={"num_workers": 0},
        mixup=0.0,
        cutmix=0.0,
        smoothing=0.1,
        drop_path=0.1,
    )
    m = finetune(vit, data, data, n_classes=2, **tiny)
    assert m["top1"] == pytest.approx(100.0)
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    # Mixup/CutMix path runs (soft targets, even batches).
    m = finetune(vit, data, data, n_classes=2, **{**tiny, "epochs": 1, "mixup": 0.8, "cutmix": 1.0})
    assert 0.0 <= m["top1"] <= 100.0


# ---- the evaluators on a finished run -------------------------------------------------------


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    from harness.train import pretrain

    root = tmp_path_factory.mktemp("evals")
    cfg = C.with_runtime(
        C.resolve("moco_v3+ser", "micro", overrides=["train.max_steps=1"]), quiet=True
    )
    data = C.data_root(cfg, root)
    C.ensure_data(cfg, data)
    pretrain(cfg, root / "run", data)
    return cfg, root / "run", data


def test_knn_and_mlp_share_one_feature_extraction(micro_run):
    cfg, run, data = micro_run
    knn = evaluator("knn", "imagenet")(run, data, cfg, quiet=True)
    files = sorted((run / "features").iterdir())
    assert len(files) == 2 and set(knn) == {"knn20_top1", "knn20_top5"}  # train + val
    mlp = evaluator("mlp", "imagenet")(
        run, data, {**cfg, "mlp": {**cfg["mlp"], "epochs": 2, "hidden": 16}}, quiet=True
    )
    assert sorted((run / "features").iterdir()) == files
    assert set(mlp) == {"mlp_top1", "mlp_top5"} and all(0 <= v <= 100 for v in mlp.values())


@pytest.mark.slow
def test_equivariance_and_transform_probe_evaluators(micro_run):
    cfg, run, data = micro_run
    eq_cfg = {**cfg, "equivariance": {**cfg["equivariance"], "n_images": 6, "layers": [3]}}
    eq = evaluator("equivariance", "imagenet")(run, data, eq_cfg, quiet=True)
    assert {"equiv_rotation", "equiv_hflip", "equiv_scale", "layer3/equiv_rotation"} <= set(eq)
    assert all(-1 <= v <= 1 + 1e-6 for v in eq.values())
    opts = {"layers": [1, 3], "per_class": 2, "epochs": 2, "seeds": 1}
    before = set((run / "features").glob("*")) if (run / "features").exists() else set()
    tp = evaluator("transform_probe", "imagenet")(
        run, data, {**cfg, "transform_probe": {**cfg["transform_probe"], **opts}}, quiet=True
    )
    for prefix in ("", "random_init/"):
        for layer in (1, 3):
            assert 0 <= tp[f"{prefix}layer{layer}/rotation_pred_acc"] <= 100
            assert 0 <= tp[f"{prefix}layer{layer}/hflip_pred_acc"] <= 100
    # One extraction per (view, D4 element, split, model): 2 × 5 × 2 × 2.
    assert len(set((run / "features").glob("*")) - before) == 40
    # View B is another crop of the same image than view A, the same one on every read.
    from harness.eval import transform_probe as tpm

    size, resize = cfg["model"]["img_size"], cfg["linear"]["resize"]
    views = [tpm.probe_views(data, size, resize, 2, relative=True) for _ in range(2)]
    a, b = (views[0][v][0]["train"][0][0] for v in ("A", "B"))
    assert a.shape == b.shape and not torch.equal(a, b)
    assert torch.equal(b, views[1]["B"][0]["train"][0][0])
    assert set(tpm.probe_views(data, size, resize, 2, relative=False)) == {"A"}
