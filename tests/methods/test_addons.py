"""The equivariance add-ons (spec/methods.md §4–7): each loss against a direct re-implementation
of its formula, each §10 pitfall, the view policies that feed them, and @layerK.

AugSelf, EquiMod and STL are checked here under ``@original`` (the harness's computation before
version 2; EquiMod's and STL's own repositories' since version 3, test_addons_repositories.py);
their defaults, the public SER code's, are in test_addons_public.py."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from harness import config as C
from harness.data.augment import IDX, STD, Pipeline, encode
from harness.data.batches import build_policy
from harness.errors import HarnessError
from harness.instruments.audit import audit
from harness.instruments.flops import params_millions
from harness.schedule import Progress
from methods.augself import color_vector, crop_target, crop_vector
from methods.equimod import VECTOR_NAMES
from methods.losses import nt_xent
from methods.registry import parse
from tests.methods.addons import encode_for_addons as _encode
from tests.methods.addons import nt_xent_loop as _nt_xent_loop
from tests.methods.addons import setup as _setup


def _images(n=8, size=20, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)) for _ in range(n)
    ]


# ---- recorded augmentations ----------------------------------------------------------------


def test_recorded_pipeline_renders_what_torchvision_renders():
    pipe = Pipeline(160, (0.2, 1.0), blur_p=0.5, solarize_p=0.5)  # σ large enough to show
    for seed in range(6):
        for im in _images(3, seed=seed):
            torch.manual_seed(seed)
            ref = pipe.torchvision()(im)
            torch.manual_seed(seed)
            params = pipe.sample(im)
            ours = pipe.apply(im, params)
            if not params[IDX["blur"]]:
                assert torch.equal(ref, ours)
                continue
            # The blur is separable (two 1-D passes, same kernel and σ): its sums round to
            # uint8 differently from torchvision's k×k one for a few pixels, by one level.
            diff = (ref - ours).abs()
            assert diff.max() <= 1 / (255 * min(STD)) + 1e-6
            assert (diff > 0).float().mean() < 1e-3


def test_paired_policy_shares_crop_and_colour_not_flip():
    m, batch = _setup("moco_v3+stl")
    shared = [
        IDX[k]
        for k in (
            "top",
            "left",
            "height",
            "width",
            "jitter",
            "brightness",
            "contrast",
            "saturation",
            "hue",
            "gray",
        )
    ]
    flips = []
    for p in batch["params"]:
        assert torch.equal(p[0::2][:, shared], p[1::2][:, shared])
        assert not torch.equal(p[0::2], p[1::2])  # views of two images do differ
        flips.append((p[0::2, IDX["flip"]] != p[1::2, IDX["flip"]]).any())
    assert any(flips), "flip is drawn per image"
    cfg = C.resolve("moco_v3+stl", "micro")
    policy = build_policy(m, cfg)
    with pytest.raises(HarnessError) as e:
        policy(_images(5), seed=0)
    assert "even" in str(e.value) and "\n" not in str(e.value)


# ---- AugSelf (§4) --------------------------------------------------------------------------


def _param(**kw):
    return encode(kw)


def test_augself_original_targets_mirror_flipped_centres_and_normalise_colour_by_range():
    a = _param(
        top=10,
        left=20,
        height=50,
        width=40,
        img_h=100,
        img_w=200,
        flip=1,
        jitter=1,
        brightness=1.2,
        contrast=0.8,
        saturation=1.1,
        hue=-0.05,
    )
    b = _param(top=0, left=0, height=100, width=200, img_h=100, img_w=200, flip=0, jitter=0)
    pa, pb = a[None], b[None]
    # Centre (0.35, 0.2) mirrored to x = 0.8 under the flip; size (0.5, 0.2) vs (1, 1).
    want = torch.tensor([[-0.15, 0.3, -0.5, -0.8]])
    assert torch.allclose(crop_vector(pa) - crop_vector(pb), want)
    assert torch.allclose(crop_target(pa, pb, original=True), want)
    assert torch.allclose(crop_target(pb, pa, original=True), -want)
    # Ranges 0.8, 0.8, 0.4, 0.2 for jitter (0.4, 0.4, 0.2, 0.1); no jitter = zeros.
    assert torch.allclose(color_vector(pa), torch.tensor([[0.25, -0.25, 0.25, -0.25]]))
    assert torch.equal(color_vector(pb), torch.zeros(1, 4))


def test_augself_original_loss_is_symmetric_tanh_mse_on_backbone_features():
    m, batch = _setup("moco_v3+augself@original")
    online = _encode(m, batch)
    add = m.addons[0]
    torch.manual_seed(1)
    got = add.losses(m, batch, online, None, Progress(0, 1, 1))
    ha, hb = online[0].cls[: online[0].sizes[0]], online[1].cls[: online[1].sizes[0]]
    # Colour targets are normalised by the ranges the views drew from (SER's AugSelf loader).
    color = lambda p: color_vector(p, batch["jitter"])  # noqa: E731
    for k, fn in (("crop", crop_vector), ("color", color)):
        t = fn(batch["params"][0]) - fn(batch["params"][1])
        pred = add.heads[k](torch.cat([torch.cat([ha, hb], 1), torch.cat([hb, ha], 1)]))
        sq = (torch.tanh(pred) - torch.cat([t, -t])) ** 2
        assert torch.allclose(got[f"loss_augself_{k}"], 0.5 * sq.mean(), atol=1e-6)
    # The head reads the backbone feature: the MoCo projector gets nothing from it.
    r = audit("moco_v3+augself", "micro")["terms"]["loss_augself_crop"]
    assert r["projector"] == 0.0 and r["predictor"] == 0.0 and r["blocks.11"] > 0


def test_augself_parameter_count_is_two_spec_heads():
    d, h = 384, 512
    head = (2 * d * h + h) + (h * h + h) + (h * 4 + 4) + 2 * h  # Linear, BN, Linear, BN, Linear
    got = params_millions("moco_v3+augself", "paper") - params_millions("moco_v3", "paper")
    assert got == pytest.approx(2 * head / 1e6, abs=1e-6)


# ---- STL (§5) ------------------------------------------------------------------------------


def test_stl_original_losses_match_the_formulas_with_the_partners_transformation():
    m, batch = _setup("moco_v3+stl@original")
    online = _encode(m, batch)
    add = m.addons[0]
    got = add.losses(m, batch, online, None, Progress(0, 1, 1))
    n = online[0].sizes[0]
    h1, h2 = online[0].cls[:n], online[1].cls[:n]
    g = add.trans_encoder
    t12, t21 = g(torch.cat([h1, h2], 1)), g(torch.cat([h2, h1], 1))
    even, odd = list(range(0, n, 2)), list(range(1, n, 2))
    a = torch.cat([t12[even], t21[even]])
    b = torch.cat([t12[odd], t21[odd]])
    trans = _nt_xent_loop(add.trans_projector(a), add.trans_projector(b), 0.2)
    d = h1.shape[1]
    hat1, hat2 = [], []
    for i in range(n):
        j = i + 1 if i % 2 == 0 else i - 1  # the partner image
        hat1.append(add.hypernet(t21[j]).view(d, d) @ h2[i])
        hat2.append(add.hypernet(t12[j]).view(d, d) @ h1[i])
    p = add.equi_projector  # one call per tensor, as STL's repository
    equi = _nt_xent_loop(
        torch.cat([p(h1), p(h2)]), torch.cat([p(torch.stack(hat1)), p(torch.stack(hat2))]), 0.2
    )
    assert torch.allclose(got["loss_stl_trans"], 0.1 * trans, atol=1e-5)
    assert torch.allclose(got["loss_stl_equi"], 1.0 * equi, atol=1e-5)


# ---- EquiMod (§6) --------------------------------------------------------------------------


def test_equimod_original_uses_the_clean_image_standardised_parameters_and_4b_ntxent():
    m, batch = _setup("moco_v3+equimod@original")
    n = batch["views"][0][0].shape[0]
    assert batch["clean"].shape == batch["views"][0][0].shape
    # The clean view does not depend on the augmentation seed.
    cfg = C.resolve("moco_v3+equimod@original", "micro")

    policy = build_policy(m, cfg)
    ims = _images(4)
    assert torch.equal(policy(ims, seed=1)["clean"], policy(ims, seed=2)["clean"])
    # Standardisation constants: the parameter vectors have mean 0 / std 1 over many draws.
    policy.fit_stats([(24, 20)])
    mean, std = policy.stats
    draws = torch.stack(
        [policy.augs.globals[i % 2].sample(torch.empty(3, 20, 24)) for i in range(4000)]
    )
    z = (draws - mean) / std
    varying = draws.std(0) > 0
    assert z.mean(0)[varying].abs().max() < 0.1 and (z.std(0)[varying] - 1).abs().max() < 0.1
    online = _encode(m, batch)
    add = m.addons[0]
    got = add.losses(m, batch, online, None, Progress(0, 1, 1))["loss_equimod"]
    # EquiMod's repository: the projector once over the 3B rows, the predictor over 2B.
    y = add.projector(torch.cat([batch["encoded"]["clean"].cls] + [o.cls[:n] for o in online[:2]]))
    y0 = y[:n]
    keep = [IDX[name] for name in VECTOR_NAMES]
    assert len(keep) == 18 and not {"img_h", "img_w"} & set(VECTOR_NAMES)
    e = add.embed(torch.cat(batch["params_z"])[:, keep])
    y_hat = add.predictor(torch.cat([torch.cat([y0, y0]), e], 1))
    assert torch.allclose(got, _nt_xent_loop(y[n:], y_hat, 0.2), atol=1e-5)


# ---- E-SSL (§7) ----------------------------------------------------------------------------


def test_essl_sees_every_crop_in_all_four_rotations_with_a_layernorm_head():
    m, batch = _setup("moco_v3+essl")
    n = batch["views"][0][0].shape[0]
    rot, labels = batch["rotated"], batch["rot_labels"]
    assert len(rot) == 4 * n
    for k in range(4):
        assert torch.equal(rot[k * n : (k + 1) * n], torch.rot90(rot[:n], k, dims=(-2, -1)))
        assert (labels[k * n : (k + 1) * n] == k).all()
    head = m.addons[0].head
    assert any(isinstance(x, nn.LayerNorm) for x in head) and not any(
        isinstance(x, nn.modules.batchnorm._BatchNorm) for x in head
    )
    online = _encode(m, batch)
    got = m.addons[0].losses(m, batch, online, None, Progress(0, 1, 1))["loss_essl"]
    logits = head(batch["encoded"]["rotated"].cls)
    ce = -torch.log_softmax(logits, 1)[torch.arange(4 * n), labels].mean()
    assert torch.allclose(got, 1.0 * ce, atol=1e-6)  # SER's equiv_lambda (test_essl_public.py)
    lams = {
        b: C.build_method(C.resolve(f"{b}+essl", "micro")).addons[0].lam
        for b in ("moco_v3", "dino", "barlow_twins")
    }
    assert lams == {"moco_v3": 1.0, "dino": 0.3, "barlow_twins": 1.0}  # SER's main_*.py


def test_nt_xent_matches_the_row_by_row_formula():
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    assert torch.allclose(nt_xent(a, b, 0.3), _nt_xent_loop(a, b, 0.3), atol=1e-5)


# ---- view policies -------------------------------------------------------------------------


def test_multicrop_moco_contrasts_every_view_with_both_global_keys_only():
    m, batch = _setup("moco_v3@multicrop")
    assert (
        len(batch["views"]) == 6 and batch["views"][2][0].shape[-1] < batch["views"][0][0].shape[-1]
    )
    calls = []
    m.momentum_backbone.register_forward_hook(lambda mod, i, o: calls.append(i[0].shape))
    online = _encode(m, batch)
    got = m.training_step(batch, Progress(0, 10, 5))["loss_inv"]
    # The momentum encoder sees the two global views only, in one call (equal sizes).
    assert calls == [torch.Size([2 * batch["views"][0][0].shape[0], 3, 16, 16])]
    q = [m.predictor(m.projector(o.cls)) for o in online]
    with torch.no_grad():
        k = [
            m.momentum_projector(t.cls)
            for t in m.encode_views(m.momentum_backbone, batch["views"][:2], set())
        ]

    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).t() / 0.2
        return F.cross_entropy(logits, torch.arange(len(q))) * 0.4

    pairs = [(v, g) for g in range(2) for v in range(6) if v != g]
    assert len(pairs) == 10
    # Summed over the ten pairs, as SER's inv_local4 (issue 24; ×2/10 was the harness's own).
    assert torch.allclose(got, sum(ctr(q[v], k[g]) for v, g in pairs), atol=1e-5)


def test_ser_multicrop_pairs_one_global_two_local():
    m, batch = _setup("moco_v3@multicrop+ser")
    pairs = batch["equiv"]["pairs"]
    assert [(a, b) for a, b, *_ in pairs] == [(0, 1), (2, 3), (4, 5)]
    local_grid = batch["views"][2][0].shape[-1] // 4
    for _a, _b, ga, _gb in pairs[1:]:
        assert all(max(g.src) <= 2 * local_grid for g in ga)
    terms = m.training_step(batch, Progress(0, 10, 5))
    assert torch.isfinite(terms["loss_equiv"]) and terms["loss_equiv"] > 0


def test_missing_view_input_is_a_one_line_error_naming_the_policy():
    for name, policy in (
        ("moco_v3@2view+equimod", "@3view"),
        ("dino@multicrop+essl", "@rot4"),
        ("moco_v3@3view+stl", "@paired"),
    ):
        with pytest.raises(HarnessError) as e:  # before anything is built or queued
            C.resolve(name, "micro")
        assert policy in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(HarnessError):
        parse("moco_v3@5view")


def test_policy_is_chosen_from_the_addons_needs():
    assert {
        n: C.resolve(n, "micro")["views"]["policy"]
        for n in (
            "moco_v3",
            "moco_v3+augself",
            "moco_v3+stl",
            "moco_v3+equimod",
            "moco_v3+essl",
            "moco_v3+ser",
            "moco_v3@multicrop+ser",
        )
    } == {
        "moco_v3": "2view",
        "moco_v3+augself": "2view",
        "moco_v3+stl": "paired",
        "moco_v3+equimod": "3view",
        "moco_v3+essl": "rot4",
        "moco_v3+ser": "2view",
        "moco_v3@multicrop+ser": "multicrop",
    }


# ---- layer decoupling and gradients --------------------------------------------------------

EXTRA = {
    "augself": "loss_augself_crop",
    "stl": "loss_stl_equi",
    "equimod": "loss_equimod",
    "essl": "loss_essl",
}


@pytest.mark.parametrize("addon", sorted(EXTRA))
def test_extra_loss_reaches_all_blocks_or_only_those_below_layer_k(addon):
    term = EXTRA[addon]
    full = audit(f"moco_v3+{addon}", "micro")["terms"][term]
    assert all(full[f"blocks.{i}"] > 0 for i in range(12))
    k = 4
    dec = audit(f"moco_v3+{addon}@layer{k}", "micro")["terms"][term]
    assert all(dec[f"blocks.{i}"] > 0 for i in range(k))
    assert all(dec[f"blocks.{i}"] == 0.0 for i in range(k, 12))
    assert dec["norm_equiv"] > 0 and dec["cls_token"] == 0.0 and dec["norm"] == 0.0
    m = C.build_method(C.resolve(f"moco_v3+{addon}@layer{k}", "micro"))
    assert m.backbone.cfg.cls_layer == k and m.backbone.cfg.equiv_layer == k


def test_ablations_carry_no_equivariance_gradient():
    det = audit("moco_v3+ser_detached", "micro")["terms"]["loss_equiv"]
    assert all(v == 0.0 for v in det.values())
    assert set(audit("moco_v3+delayed_cls", "micro")["terms"]) == {"loss_inv"}


@pytest.mark.parametrize(
    "name,paper",
    [
        ("moco_v3", 42.9),
        ("moco_v3+stl", 62.2),
        ("moco_v3+ser", 43.4),
        ("moco_v3+equimod", 43.3),
        ("moco_v3+essl", 43.3),
    ],
)
def test_table1_parameter_counts(name, paper):
    assert abs(params_millions(name, "paper") - paper) <= 0.1
    assert math.isfinite(paper)
