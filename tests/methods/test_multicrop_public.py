"""MoCo-v3's 2+4 rows compute what the public SER code computed (issue 24, items 1 and 5).

References are re-implemented here from aitrics-chris/SER at commit
dbe5e9361953a28258a7f24d92f742a162376c77:

* ``builder/moco.py``, ``MoCo.inv_local4`` / ``erl_local4``: L_inv is the *sum* of
  ``contrastive_loss(cls_q[v], cls_k[g])`` over the six query views v and the two global keys
  g ≠ v (ten terms), ``contrastive_loss`` = CE(q̂·k̂ᵀ/T, arange) · 2T; nothing rescales it.
* ``builder/moco.py``, ``train_erl_local4``: SER's B2 views at 2+4 (one global pair from
  ``images[0]``, two local pairs from ``images[2]``, ``images[4]``) are all rendered with
  ``etc``, local4.py's kornia part below, not with ``aug_inv1`` / ``aug_inv2``.
* ``loader/local4.py``, ``get_dataset_local4``: each local crop is
  ``RandomResizedCrop(96, scale=(0.05, 0.25))`` (torchvision's default bilinear and ratio),
  ``RandomHorizontalFlip()``, ``ToTensor()``; then on the GPU kornia's
  ``ColorJiggle(0.4, 0.4, 0.2, 0.1, p=0.8)`` and ``RandomGaussianBlur((9, 9), (0.1, 2.0),
  p=0.5)``: no grayscale, no solarize. The blur below is kornia's: a normalised 1-D kernel
  exp(−x²/2σ²), x = −4…4, applied along both axes with reflect padding.
"""

import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from harness import config as C
from harness.data.augment import BICUBIC, BILINEAR, IDX, MEAN, STD, encode
from harness.data.batches import PretrainBatches, build_policy
from harness.data.photometric import render
from harness.data.pipelines import LOCAL_CROPS, Augmentations, local_crops_effect
from harness.errors import HarnessError
from harness.instruments.audit import random_batch
from harness.schedule import Progress
from methods.moco_v3 import MoCoV3, multicrop_scale_effect

TAU = 0.2  # MoCo-v3's ViT temperature (SER's --moco-t 0.2)
B = 8  # images per view


# ---- item 1: the 2+4 invariance loss -------------------------------------------------------


def _public_contrastive(q, k, T):
    # SER's MoCo.contrastive_loss on one rank: CrossEntropyLoss(logits, arange) * 2T.
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.t() / T
    return -(logits.diagonal() - torch.logsumexp(logits, dim=1)).mean() * (2 * T)


def _public_inv_local4(cls_q, cls_k, T):
    loss = torch.zeros((), dtype=torch.float64)
    for num_q in range(len(cls_q)):
        for num_k in range(2):
            if num_q != num_k:
                loss = loss + _public_contrastive(cls_q[num_q], cls_k[num_k], T)
    return loss


def _moco(*overrides):
    cfg = C.resolve("moco_v3@multicrop", "micro", overrides=list(overrides))
    torch.manual_seed(0)
    return C.build_method(cfg).double().train()  # BatchNorm on batch statistics


def _encodings(m, n_views, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = m.backbone.width
    online = [
        SimpleNamespace(cls=torch.randn(B, d, generator=g, dtype=torch.float64))
        for _ in range(n_views)
    ]
    target = [SimpleNamespace(cls=o.cls + 0.1 * torch.randn_like(o.cls)) for o in online[:2]]
    return online, target


def _public_loss(m, online, target):
    with torch.no_grad():
        cls_q = [m.predictor(m.projector(o.cls)) for o in online]
        cls_k = [m.momentum_projector(t.cls) for t in target]
    return _public_inv_local4(cls_q, cls_k, TAU)


def test_default_2plus4_invariance_loss_is_sers_sum_over_ten_pairs():
    m = _moco()
    assert m.recipe["multicrop_scale"] == "public" and m.recipe["tau"] == TAU
    online, target = _encodings(m, 6)
    with torch.no_grad():
        got = m.invariance_loss(online, target, None)
    want = _public_loss(m, online, target)
    assert got.dtype == torch.float64
    assert abs(float(got - want)) <= 1e-6 * max(1.0, abs(float(want)))


def test_pairs_switch_gives_the_earlier_two_pair_scale():
    m = _moco("recipe.multicrop_scale=pairs")
    online, target = _encodings(m, 6)
    with torch.no_grad():
        got = m.invariance_loss(online, target, None)
    want = _public_loss(m, online, target) * 2 / 10
    assert abs(float(got - want)) <= 1e-6 * max(1.0, abs(float(want)))


@pytest.mark.parametrize("scale", ["public", "pairs"])
def test_two_views_are_moco_v3s_symmetric_loss_under_either_scale(scale):
    m = _moco(f"recipe.multicrop_scale={scale}")
    online, target = _encodings(m, 2)
    with torch.no_grad():
        got = m.invariance_loss(online, target, None)
    want = _public_loss(m, online, target)  # q1·k2 + q2·k1
    assert abs(float(got - want)) <= 1e-6 * max(1.0, abs(float(want)))


def test_training_step_of_a_2plus4_run_logs_five_times_the_switchs_loss_inv():
    # Through config, build and the real views: the default against the switch, same weights.
    got = {}
    for scale in ("public", "pairs"):
        cfg = C.resolve("moco_v3@multicrop", "micro", overrides=[f"recipe.multicrop_scale={scale}"])
        torch.manual_seed(0)
        m = C.build_method(cfg).train()
        terms = m.training_step(random_batch(m, cfg, 0), Progress(0, 10, 5))
        got[scale] = float(terms["loss_inv"].detach())
    assert got["public"] == pytest.approx(5 * got["pairs"], rel=1e-5)


def test_multicrop_scale_effect_reports_the_ratio_it_measures():
    line = multicrop_scale_effect()
    ratio = float(re.search(r"([0-9.]+)×", line).group(1))
    assert ratio == 5.0  # ten pairs against the switch's two-pair weight


def test_unknown_multicrop_scale_names_the_setting_at_build():
    with pytest.raises(HarnessError, match="recipe.multicrop_scale=half: choose one of"):
        _moco("recipe.multicrop_scale=half")


def test_runs_of_the_old_loss_are_re_keyed_and_two_view_runs_keep_their_ids():
    """The 2+4 runs' hash covers the local crops and the loss scale (both changed), a two-view
    run's leaves them out (nothing it computes changed): its id is the one it had before."""
    two = C.resolve("moco_v3", "micro")
    assert C.config_hash(two) == C.config_hash(
        C.resolve("moco_v3", "micro", overrides=["recipe.multicrop_scale=pairs"])
    )
    assert C.config_hash(two) == C.config_hash(
        C.resolve("moco_v3", "micro", overrides=["views.local_crops=dino"])
    )
    multi = C.resolve("moco_v3@multicrop", "micro")
    for over in ("recipe.multicrop_scale=pairs", "views.local_crops=dino"):
        assert C.config_hash(multi) != C.config_hash(
            C.resolve("moco_v3@multicrop", "micro", overrides=[over])
        ), over


# ---- item 5: the local crops ---------------------------------------------------------------


def _local(local_crops=None, size=224):
    over = [f"model.img_size={size}", "model.patch_size=16"]
    if local_crops:
        over.append(f"views.local_crops={local_crops}")
    cfg = C.resolve("moco_v3@multicrop+ser", "micro", overrides=over)
    return build_policy(C.build_method(cfg), cfg)


def test_local_crops_are_configured_as_local4_py():
    policy = _local()
    pipe = policy.augs.local
    assert pipe.size == 96 and pipe.scale == (0.05, 0.25)
    assert pipe.interpolation == BILINEAR  # torchvision's default; not the method's
    assert pipe.jitter == (0.4, 0.4, 0.2, 0.1) and pipe.jitter_p == 0.8
    assert pipe.gray_p == 0.0 and pipe.solarize_p == 0.0 and pipe.blur_p == 0.5
    assert pipe.flavour == "kornia" and pipe.kernel == 9 and pipe.sigma_range == (0.1, 2.0)
    # The device-rendered path takes the same 9×9 kernel (one local chunk of a deferred batch).
    policy.defer = True
    batch = policy(_photos(4), seed=1)
    assert len(batch["views"]) == 6 and batch["views"][2][0].blur == 9


def test_dino_switch_gives_dinos_local_crops():
    pipe = _local("dino").augs.local
    assert pipe.scale == (0.05, 0.4) and pipe.interpolation == BICUBIC and pipe.gray_p == 0.2
    assert pipe.blur_p == 0.5 and pipe.solarize_p == 0.0 and pipe.kernel == 9


def test_unknown_local_crops_names_the_setting():
    ssl = MoCoV3.augmentation
    with pytest.raises(HarnessError, match="views.local_crops=big: choose one of ser, dino"):
        Augmentations(ssl, 224, 16, local_crops="big")


def test_smaller_presets_scale_the_local_blur_with_the_global_views():
    # 32 px global, 16 px local: the 224-px blur at 32 px (kernel 3, σ ∈ [0.1, 2] · 32/224).
    pipe = Augmentations(MoCoV3.augmentation, 32, 8).local
    assert pipe.size == 16 and pipe.kernel == 3
    assert pipe.sigma_range == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))


def _draws(pipe, n=3000, size=224):
    img = torch.empty(3, size, size)
    torch.manual_seed(0)
    return torch.stack([pipe.sample(img) for _ in range(n)])


def test_drawn_local_parameters_follow_local4_py():
    p = _draws(_local().augs.local)
    n, area = len(p), 224 * 224
    h, w = p[:, IDX["height"]], p[:, IDX["width"]]
    # RandomResizedCrop rounds each side of the drawn area: it lies within ±½ px of both sides.
    assert ((h - 0.5) * (w - 0.5) <= 0.25 * area).all()
    assert ((h + 0.5) * (w + 0.5) >= 0.05 * area).all()
    share = h * w / area
    assert share.max() > 0.24 and share.min() < 0.06  # both ends of (0.05, 0.25) are reached
    assert abs(float(share.mean()) - 0.15) < 0.01  # uniform area share over the range
    tol = 4 * math.sqrt(0.25 / n)
    rate = {k: float(p[:, IDX[k]].mean()) for k in ("flip", "jitter", "gray", "blur", "solarize")}
    assert rate["gray"] == 0.0 and rate["solarize"] == 0.0
    assert abs(rate["blur"] - 0.5) < tol and abs(rate["flip"] - 0.5) < tol
    assert abs(rate["jitter"] - 0.8) < tol
    sigma = p[p[:, IDX["blur"]] > 0, IDX["sigma"]]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and abs(float(sigma.mean()) - 1.05) < 0.05


def test_dino_switch_draws_grayscale_and_larger_crops():
    p = _draws(_local("dino").augs.local)
    share = p[:, IDX["height"]] * p[:, IDX["width"]] / 224**2
    assert share.max() > 0.38 and abs(float(p[:, IDX["gray"]].mean()) - 0.2) < 0.04


def _photos(n, size=260):
    g = torch.Generator().manual_seed(3)
    return [
        Image.fromarray((torch.rand(size, size + 20, 3, generator=g) * 255).byte().numpy())
        for _ in range(n)
    ]


def _kornia_blur(x, sigma, k=9):
    r = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (k // 2,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, k).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).repeat(c, 1, 1, 1), groups=c)


def test_local_crop_pixels_are_local4_pys_on_a_fixed_image():
    pipe = _local().augs.local
    img = _photos(1)[0]
    local4 = T.Compose(
        [T.RandomResizedCrop(96, scale=(0.05, 0.25)), T.RandomHorizontalFlip(), T.ToTensor()]
    )
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (MEAN, STD))
    for seed in range(4):
        torch.manual_seed(seed)
        want = local4(img)[None].double()  # the geometric part: the same torch draws
        torch.manual_seed(seed)
        p = pipe.sample_geometric(img, {})
        crop = pipe.crop(img, encode(p))
        assert torch.equal(TF.to_tensor(crop)[None].double(), want), seed
        # The photometric part without jitter, blurred: kornia's 9×9 blur at σ, in float64.
        for blur, sigma in ((0.0, 0.0), (1.0, 0.3 + 0.5 * seed)):
            q = encode({**p, "blur": blur, "sigma": sigma})
            got = render(
                TF.pil_to_tensor(crop)[None], q[None], pipe.kernel, torch.float64, "kornia"
            )
            ref = _kornia_blur(want, sigma) if blur else want
            assert (got * std + mean - ref).abs().max() < 1e-6, (seed, blur)
            # The pipeline itself (float32) renders the same image.
            assert (pipe.apply(img, q)[None].double() - got).abs().max() < 1e-5


def test_local_crops_effect_reports_what_the_pipelines_draw():
    line = local_crops_effect(n=400)
    got = {
        name: tuple(
            map(
                float,
                re.search(
                    rf"{name}: mean area ([0-9.]+)% \(max ([0-9.]+)%\), "
                    rf"gray ([0-9.]+)%",
                    line,
                ).groups(),
            )
        )
        for name in LOCAL_CROPS
    }
    assert got["ser"][1] <= 25.5 and got["ser"][2] == 0.0 and abs(got["ser"][0] - 15) < 1.5
    assert got["dino"][1] > 35 and abs(got["dino"][2] - 20) < 8 and abs(got["dino"][0] - 22.5) < 2


def test_ser_2plus4_b2_views_take_local4s_photometric_part():
    policy = _local()
    policy.defer = True
    imgs = [(im, 0) for im in _photos(32, 64)]
    per_view = {v: [] for v in range(6)}
    for seed in range(4):
        batch = PretrainBatches(imgs, policy, 32, seed=seed)[0]
        assert [(a, b) for a, b, *_ in batch["equiv"]["pairs"]] == [(0, 1), (2, 3), (4, 5)]
        for v in range(6):
            chunk = batch["views"][v][1]  # chunk 1: the B2 images of view v
            assert chunk.blur == 9 and chunk.flavour == "kornia"
            per_view[v].append(chunk.params)
    p = {v: torch.cat(c) for v, c in per_view.items()}
    for v in range(6):
        assert (p[v][:, IDX["gray"]] == 0).all() and (p[v][:, IDX["solarize"]] == 0).all()
    # The global pair too: not aug_inv1's blur p 1.0 (nor aug_inv2's solarize).
    assert 0 < float(p[0][:, IDX["blur"]].mean()) < 1
    allp = torch.cat(list(p.values()))
    tol = 4 * math.sqrt(0.25 / len(allp))
    assert abs(float(allp[:, IDX["blur"]].mean()) - 0.5) < tol
    assert abs(float(allp[:, IDX["jitter"]].mean()) - 0.8) < tol
    # Global-pair bases are 224-px global crops, local-pair bases 96-px local ones.
    assert batch["views"][0][1].crops.shape[-1] == 224
    assert batch["views"][2][1].crops.shape[-1] == 96
