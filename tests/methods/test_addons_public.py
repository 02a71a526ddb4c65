"""AugSelf, EquiMod and STL compute by default what the public SER code computed for Table 1
(aitrics-chris/SER: ``extract_diff`` / ``SSObjective`` on branch ``augself``;
``MoCo.equimod`` and ``MoCo.stl`` in ``builder/moco.py``); ``@original`` is AugSelf's paper's
crop target, and EquiMod's and STL's own repositories (checked against re-implementations of
those repositories in test_addons_repositories.py). Each expected value is re-computed here
from the formula with the add-on's own submodules."""

import pytest
import torch
import torch.nn.functional as F

from harness import config as C
from harness.data.augment import IDX, encode
from harness.schedule import Progress
from methods.augself import color_vector, crop_target, crop_vector
from methods.registry import parse
from tests.methods.addons import encode_for_addons as _encode
from tests.methods.addons import nt_xent_loop as _nt_xent_loop
from tests.methods.addons import setup as _setup

P0 = Progress(0, 1, 1)


def _moco(q, k, tau):
    """One direction of the public ``contrastive_loss``: keys detached, CE · 2τ."""
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).detach().t() / tau
    return F.cross_entropy(logits, torch.arange(len(q))) * (2 * tau)


def _feature(enc):
    return enc.cls[: enc.sizes[0]]


# ---- the modifier --------------------------------------------------------------------------


# EquiMod's and STL's @original became their repositories' computation in version 3.
@pytest.mark.parametrize("addon, version", [("augself", 2), ("equimod", 3), ("stl", 3)])
def test_original_modifier_parses_and_the_version_is_bumped(addon, version):
    _, [(cls, opts)] = parse(f"moco_v3+{addon}")
    assert opts == {} and cls.version == version and "@original" in cls.modifier_help
    _, [(cls, opts)] = parse(f"moco_v3+{addon}@original")
    assert opts == {"original": True}
    m = C.build_method(C.resolve(f"moco_v3+{addon}@original", "micro"))
    assert m.addons[0].original is True
    assert C.build_method(C.resolve(f"moco_v3+{addon}", "micro")).addons[0].original is False
    cfg = C.resolve(f"moco_v3+{addon}@original", "micro")
    assert cfg["versions"][addon] == version and cfg["addons"][0]["options"]["original"] is True


# ---- AugSelf -------------------------------------------------------------------------------


def _public_crop_diff(p1, p2):
    """SER's (and AugSelf's) ``extract_diff`` for the order (1, 2): crop = [i/H, j/W, h/H,
    w/W]; both centres' x mirrored where view 1 was flipped."""

    def crop(p):
        hh, ww = p[:, IDX["img_h"]], p[:, IDX["img_w"]]
        return torch.stack(
            [p[:, IDX["top"]] / hh, p[:, IDX["left"]] / ww, p[:, IDX["height"]] / hh,
             p[:, IDX["width"]] / ww],
            1,
        )  # fmt: skip

    crop1, crop2 = crop(p1), crop(p2)
    f1 = p1[:, IDX["flip"]] > 0
    center1 = crop1[:, :2] + crop1[:, 2:] / 2
    center2 = crop2[:, :2] + crop2[:, 2:] / 2
    center1[f1, 1] = 1 - center1[f1, 1]
    center2[f1, 1] = 1 - center2[f1, 1]
    return torch.cat([center1 - center2, crop1[:, 2:] - crop2[:, 2:]], 1)


def _flipped_pair():
    # a: centre (0.35, 0.2), size (0.5, 0.2), flipped; b: centre (0.5, 0.65), size (0.4, 0.3).
    a = encode(dict(top=10, left=20, height=50, width=40, img_h=100, img_w=200, flip=1))
    b = encode(dict(top=30, left=100, height=40, width=60, img_h=100, img_w=200, flip=0))
    return a[None], b[None]


def test_augself_crop_target_mirrors_both_centres_with_view_a_flip():
    pa, pb = _flipped_pair()
    # (a, b) mirrored with a's flip: x = (1 − 0.2) − (1 − 0.65) = 0.45.
    assert torch.allclose(crop_target(pa, pb), torch.tensor([[-0.15, 0.45, 0.1, -0.1]]))
    # (b, a) with b's flip (none): x = 0.65 − 0.2 = 0.45, the same sign, not −0.45.
    assert torch.allclose(crop_target(pb, pa), torch.tensor([[0.15, 0.45, -0.1, 0.1]]))
    assert torch.allclose(crop_target(pa, pb), _public_crop_diff(pa, pb))
    assert torch.allclose(crop_target(pb, pa), _public_crop_diff(pb, pa))
    # @original: each centre by its own flip, x = 0.8 − 0.65; the reverse order negated.
    old = torch.tensor([[-0.15, 0.15, 0.1, -0.1]])
    assert torch.allclose(crop_target(pa, pb, original=True), old)
    assert torch.allclose(crop_target(pb, pa, original=True), -old)
    assert torch.allclose(crop_vector(pa) - crop_vector(pb), old)
    assert not torch.allclose(crop_target(pa, pb), old)


def test_augself_default_loss_regresses_the_public_targets_and_original_the_old_ones():
    m, batch = _setup("moco_v3+augself")
    online = _encode(m, batch)
    add = m.addons[0]
    pa, pb = batch["params"]
    assert (pa[:, IDX["flip"]] != pb[:, IDX["flip"]]).any(), "need a pair flipped differently"
    ha, hb = _feature(online[0]), _feature(online[1])
    x = torch.cat([torch.cat([ha, hb], 1), torch.cat([hb, ha], 1)])
    # _extract_w divides by the width of the views' own jitter ranges (SER's AugSelf loader).
    ca, cb = color_vector(pa, batch["jitter"]), color_vector(pb, batch["jitter"])
    public = {
        "crop": torch.cat([_public_crop_diff(pa, pb), _public_crop_diff(pb, pa)]),
        "color": torch.cat([ca - cb, cb - ca]),
    }
    t_old = crop_vector(pa) - crop_vector(pb)
    old = {"crop": torch.cat([t_old, -t_old]), "color": public["color"]}
    pred = {k: torch.tanh(add.heads[k](x)) for k in public}
    got = add.losses(m, batch, online, None, P0)
    add.original = True
    got_old = add.losses(m, batch, online, None, P0)
    for k in public:
        want = 0.5 * F.mse_loss(pred[k], public[k])
        assert torch.allclose(got[f"loss_augself_{k}"], want, atol=1e-6)
        assert torch.allclose(got_old[f"loss_augself_{k}"], 0.5 * F.mse_loss(pred[k], old[k]))
    assert not torch.allclose(got["loss_augself_crop"], got_old["loss_augself_crop"])
    assert torch.allclose(got["loss_augself_color"], got_old["loss_augself_color"])


# ---- EquiMod -------------------------------------------------------------------------------

# SER's loader/equimod.py: [i, j, h, w, flip, jitter, order ×4, b, c, s, h, gray, blur, σ,
# solarize].
KEEP = [
    IDX[n]
    for n in (
        "top", "left", "height", "width", "flip", "jitter", "order0", "order1", "order2",
        "order3", "brightness", "contrast", "saturation", "hue", "gray", "blur", "sigma",
        "solarize",
    )
]  # fmt: skip


def _equimod_parts(add, batch, online):
    y0 = add.projector(_feature(batch["encoded"]["clean"]))
    yt = torch.cat([add.projector(_feature(o)) for o in online[:2]])  # one call per view
    p = batch["params_z"]
    return y0, yt, p


def test_equimod_runs_the_predictor_once_on_both_views_with_symmetric_moco_infonce():
    m, batch = _setup("moco_v3+equimod")
    online = _encode(m, batch)
    add = m.addons[0]
    got = add.losses(m, batch, online, None, P0)["loss_equimod"]
    y0, yt, p = _equimod_parts(add, batch, online)
    # Public: proj_head_t on the 2B rows [p1; p2], predictor_eq on [y0; y0] ⊕ that, at once.
    e = add.embed(torch.cat(p)[:, KEEP])
    y_hat = add.predictor(torch.cat([torch.cat([y0, y0]), e], 1))
    want = 0.5 * (_moco(yt, y_hat, 0.2) + _moco(y_hat, yt, 0.2))
    assert torch.allclose(got, want, atol=1e-5)
    # The per-view predictor (two BatchNorm batches) gives other embeddings (its effect on
    # the loss, ~1e-4 relative, is checked in float64 in test_addons_repositories.py).
    per_view = torch.cat([add.predictor(torch.cat([y0, add.embed(q[:, KEEP])], 1)) for q in p])
    assert not torch.allclose(per_view, y_hat, atol=1e-3)
    # Keys carry no gradient: the gradient is that of the detached-key formula.
    w = add.projector[0].weight
    (g_got,) = torch.autograd.grad(got, w)
    (g_want,) = torch.autograd.grad(want, w)
    assert torch.allclose(g_got, g_want, atol=1e-6)


def test_equimod_original_is_the_joint_projector_and_predictor_and_4b_ntxent():
    m, batch = _setup("moco_v3+equimod@original")
    online = _encode(m, batch)
    add = m.addons[0]
    got = add.losses(m, batch, online, None, P0)["loss_equimod"]
    # EquiMod's repository: one projector call over [clean; view 1; view 2] ...
    f = [_feature(batch["encoded"]["clean"]), _feature(online[0]), _feature(online[1])]
    y = add.projector(torch.cat(f))
    n = len(f[0])
    y0, yt = y[:n], y[n:]
    # ... and one embedding / predictor call over the 2B rows.
    p = torch.cat(batch["params_z"])[:, KEEP]
    y_hat = add.predictor(torch.cat([torch.cat([y0, y0]), add.embed(p)], 1))
    assert torch.allclose(got, _nt_xent_loop(yt, y_hat, 0.2), atol=1e-5)
    add.original = False
    assert not torch.allclose(got, add.losses(m, batch, online, None, P0)["loss_equimod"])


# ---- STL -----------------------------------------------------------------------------------


def _stl_parts(add, online):
    h1, h2 = _feature(online[0]), _feature(online[1])
    n, d = len(h1), h1.shape[1]
    g = add.trans_encoder
    t12, t21 = g(torch.cat([h1, h2], 1)), g(torch.cat([h2, h1], 1))
    even, odd = list(range(0, n, 2)), list(range(1, n, 2))
    za = add.trans_projector(torch.cat([t12[even], t21[even]]))
    zb = add.trans_projector(torch.cat([t12[odd], t21[odd]]))
    hat1, hat2 = [], []
    for i in range(n):
        j = i ^ 1  # the partner image
        hat1.append(add.hypernet(t21[j]).view(d, d) @ h2[i])
        hat2.append(add.hypernet(t12[j]).view(d, d) @ h1[i])
    return h1, h2, torch.stack(hat1), torch.stack(hat2), za, zb


def test_stl_projects_each_tensor_separately_with_symmetric_moco_infonce():
    m, batch = _setup("moco_v3+stl")
    online = _encode(m, batch)
    add = m.addons[0]
    got = add.losses(m, batch, online, None, P0)
    h1, h2, hat1, hat2, za, zb = _stl_parts(add, online)
    p = add.equi_projector
    z = torch.cat([p(h1), p(h2)])  # four BatchNorm batches of B
    z_hat = torch.cat([p(hat1), p(hat2)])
    equi = _moco(z, z_hat, 0.2) + _moco(z_hat, z, 0.2)
    trans = _moco(za, zb, 0.2) + _moco(zb, za, 0.2)
    assert torch.allclose(got["loss_stl_equi"], 1.0 * equi, atol=1e-5)
    assert torch.allclose(got["loss_stl_trans"], 0.1 * trans, atol=1e-5)
    # Projecting [h1; h2] jointly (one batch of 2B) gives another value.
    z_joint = p(torch.cat([h1, h2]))
    assert not torch.allclose(z_joint, z, atol=1e-3)
    joint = _moco(z_joint, z_hat, 0.2) + _moco(z_hat, z_joint, 0.2)
    assert not torch.allclose(got["loss_stl_equi"], joint)


def test_stl_original_projects_each_tensor_separately_with_ntxent():
    m, batch = _setup("moco_v3+stl@original")
    online = _encode(m, batch)
    add = m.addons[0]
    got = add.losses(m, batch, online, None, P0)
    h1, h2, hat1, hat2, za, zb = _stl_parts(add, online)
    p = add.equi_projector
    # STL's repository: the same four projector calls as the default, NT-Xent over 2N.
    equi = _nt_xent_loop(torch.cat([p(h1), p(h2)]), torch.cat([p(hat1), p(hat2)]), 0.2)
    assert torch.allclose(got["loss_stl_equi"], equi, atol=1e-5)
    assert torch.allclose(got["loss_stl_trans"], 0.1 * _nt_xent_loop(za, zb, 0.2), atol=1e-5)
    add.original = False
    new = add.losses(m, batch, online, None, P0)
    assert not torch.allclose(got["loss_stl_equi"], new["loss_stl_equi"])
