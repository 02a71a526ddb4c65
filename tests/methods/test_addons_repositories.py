"""``+equimod@original`` and ``+stl@original`` compute what the add-ons' own repositories
compute, in BatchNorm train mode, to 1e-6 in float64 (loss and gradients), with the add-on's
weights copied into a re-implementation of each repository's forward:

- EquiMod: ADevillers/EquiMod, branch SimCLR+EquiMod at 908c7b4f674c536574e0226abd4f7ce85c014e31
  (``src/model.py`` ``EquiMod.forward``, ``src/loss.py`` ``NTXentLoss``, ``src/main.py``
  ``train_repr``; the BYOL+EquiMod branch, 5c936cf, has the same equivariant part);
- STL: jaemyung-u/stl at 2138162e17d42cf64119e19d4e5dfedfc7c858f4 (``model.py``
  ``STL.forward``, ``info_nce_loss``, ``load_mlp``, ``EquiTrans``).

The defaults stay the public SER code's (test_addons_public.py); the departures' measurements
(methods/departures.py ``equimod-batching``, ``stl-projections``) are checked here too.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.data.augment import IDX
from methods import departures
from methods import equimod as equimod_module
from methods import stl as stl_module
from methods.base import Encoded
from tests.methods.addons import encode_for_addons, setup

# EquiMod's 18-d vector in the order SER's loader/equimod.py builds it (the repository's
# BYOL branch: crop box, flip, jitter applied, order ×4, factors ×4, gray, blur, σ, solarize).
KEEP = [
    IDX[n]
    for n in (
        "top", "left", "height", "width", "flip", "jitter", "order0", "order1", "order2",
        "order3", "brightness", "contrast", "saturation", "hue", "gray", "blur", "sigma",
        "solarize",
    )
]  # fmt: skip


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


def _assert_close(a, b, what):
    assert a is not None and b is not None, what
    err = (a - b).abs().max().item()
    assert err <= 1e-6 * max(1.0, b.abs().max().item()), f"{what}: {err:.3g}"


# ---- EquiMod -------------------------------------------------------------------------------


class RepoEquiMod(nn.Module):
    """The equivariant part of EquiMod's ``EquiMod``: ``proj_head_eq`` (2 hidden layers,
    last BN without affine), ``proj_head_t`` (Linear-BN), ``predictor_eq`` (Linear-BN)."""

    def __init__(self, h_dim, hidden, y_dim, p_dim):
        super().__init__()
        self.proj_head_eq = nn.Sequential(
            nn.Linear(h_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, y_dim, bias=False), nn.BatchNorm1d(y_dim, affine=False),
        )  # fmt: skip
        self.proj_head_t = nn.Sequential(nn.Linear(p_dim, y_dim, bias=False), nn.BatchNorm1d(y_dim))
        self.predictor_eq = nn.Sequential(
            nn.Linear(2 * y_dim, y_dim, bias=False), nn.BatchNorm1d(y_dim, affine=False)
        )

    def forward(self, h, params):
        # h = backbone([img_0; img_1; img_2]) (3B rows), params = standardised [p1; p2].
        y = self.proj_head_eq(h)
        b = y.shape[0] // 3
        y0 = torch.cat([y[:b], y[:b]], dim=0)
        yt = y[b:]
        yt_hat = self.predictor_eq(torch.cat([y0, self.proj_head_t(params)], dim=1))
        return yt, yt_hat


def _repo_ntxent(z, temperature, zeta=1e8):
    """``NTXentLoss``: z = [z_i; z_j]; −ζ on the diagonal; row i's positive is i ± N."""
    n = z.shape[0] // 2
    zn = F.normalize(z)
    sim = zn @ zn.t() / temperature - zeta * torch.eye(2 * n, dtype=z.dtype)
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, labels)


def _equimod_repo_loss(add, batch, online):
    """The repository's loss_eq_y · λ on the add-on's inputs, with its weights copied in."""
    f = [batch["encoded"]["clean"].cls, online[0].cls, online[1].cls]
    e = add.embed[0].out_features
    repo = RepoEquiMod(f[0].shape[1], add.projector[0].out_features, e, len(KEEP)).double()
    repo.proj_head_eq.load_state_dict(add.projector.state_dict())
    repo.proj_head_t.load_state_dict(add.embed.state_dict())
    repo.predictor_eq.load_state_dict(add.predictor.state_dict())
    repo.train()
    p = torch.cat(batch["params_z"])[:, KEEP]
    yt, yt_hat = repo(torch.cat(f), p)
    # main.py: loss_eq_y = NTXentLoss(cat[yt, yt_hat], temperature_y = 0.2) · world_size (1).
    return add.lam * _repo_ntxent(torch.cat([yt, yt_hat]), 0.2), repo


def _leaf_inputs(batch, online):
    for enc in [batch["encoded"]["clean"], *online]:
        enc.cls.requires_grad_(True)
    return [batch["encoded"]["clean"].cls, online[0].cls, online[1].cls]


def test_equimod_original_is_the_repository_forward_in_train_mode():
    add, batch, online = equimod_module.fixed_inputs()
    add.original = True
    feats = _leaf_inputs(batch, online)
    got = add.losses(None, batch, online, None, None)["loss_equimod"]
    want, repo = _equimod_repo_loss(add, batch, online)
    _assert_close(got, want, "loss")
    ours = [add.projector, add.embed, add.predictor]
    theirs = [repo.proj_head_eq, repo.proj_head_t, repo.predictor_eq]
    w_ours = [p for m in ours for p in m.parameters()]
    w_theirs = [p for m in theirs for p in m.parameters()]
    g_got = _grads(got, feats + w_ours)
    g_want = _grads(want, feats + w_theirs)
    for i, (a, b) in enumerate(zip(g_got, g_want, strict=True)):
        _assert_close(a, b, f"gradient {i}")
    # The harness's earlier per-tensor batching is not the repository's in train mode ...
    add.original = False
    _, yt, y_hat = add.embeddings(batch, online)
    per_set = add.lam * _repo_ntxent(torch.cat([yt, y_hat]), 0.2)
    assert (per_set - want).abs() / want > 1e-3
    # ... and the same in eval mode, where BatchNorm uses its running statistics.
    add.eval()
    parts = add.embeddings(batch, online)
    add.original = True
    for a, b in zip(parts, add.embeddings(batch, online), strict=True):
        _assert_close(a, b, "eval mode")


def test_equimod_original_on_a_real_batch_runs_the_projector_once_over_three_sets():
    # The wiring with a real micro batch (float32): one projector call over 3B rows.
    m, batch = setup("moco_v3+equimod@original")
    online = encode_for_addons(m, batch)
    add = m.addons[0]
    calls = []
    hook = add.projector.register_forward_hook(lambda mod, i, o: calls.append(i[0].shape[0]))
    got = add.losses(m, batch, online, None, None)["loss_equimod"]
    hook.remove()
    n = len(batch["clean"])
    assert calls == [3 * n]
    want, _ = _equimod_repo_loss(
        add.double(),
        {
            "encoded": {"clean": _as_double(batch["encoded"]["clean"])},
            "params_z": [p.double() for p in batch["params_z"]],
        },
        [_as_double(o) for o in online[:2]],
    )
    assert torch.allclose(got.double(), want, rtol=1e-4)


def _as_double(enc):
    n = enc.sizes[0]
    return Encoded(enc.cls[:n].detach().double(), [{}], [n])


def test_equimod_default_runs_the_predictor_once_over_both_views():
    # SER's MoCo.equimod: proj_head_t and predictor_eq on the 2B rows at once; per view (two
    # BatchNorm batches of B) moves the loss by ~1e-4 relative on these tensors.
    add, batch, online = equimod_module.fixed_inputs()
    got = add.losses(None, batch, online, None, None)["loss_equimod"]
    y0, yt, y_hat = add.embeddings(batch, online)
    p = [q[:, KEEP] for q in batch["params_z"]]
    joint = add.predictor(torch.cat([torch.cat([y0, y0]), add.embed(torch.cat(p))], 1))
    per_view = torch.cat([add.predictor(torch.cat([y0, add.embed(q)], 1)) for q in p])

    def public(a, b):  # ½(C(yt, ŷ) + C(ŷ, yt)), C MoCo-v3's contrastive term (keys detached)
        def c(q, k):
            logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).detach().t() / 0.2
            return F.cross_entropy(logits, torch.arange(len(q))) * 0.4

        return 0.5 * (c(a, b) + c(b, a))

    _assert_close(got, public(yt, joint), "loss")
    assert (public(yt, per_view) - got).abs() / got > 1e-5


def test_equimod_batching_measurement_is_the_code_s_numbers():
    v = equimod_module.batching_effect_numbers()
    add, batch, online = equimod_module.fixed_inputs()
    add.original = True
    want, _ = _equimod_repo_loss(add, batch, online)
    assert v["original"] == pytest.approx(want.item(), rel=1e-9)
    add.original = False
    assert v["default"] == pytest.approx(
        add.losses(None, batch, online, None, None)["loss_equimod"].item(), rel=1e-9
    )
    rel = abs(v["original_per_set"] - v["original"]) / v["original"]
    assert 1e-3 < rel < 0.1  # the issue's ≈ 1e-2
    line = equimod_module.batching_effect()
    assert f"{v['original'] / v['default']:.3g}×" in line and f"{rel:.2g} relative" in line
    (d,) = [d for d in departures.DEPARTURES if d.key == "equimod-batching"]
    assert d.measure == "methods.equimod:batching_effect" and departures.measured(d) == line


# ---- STL -----------------------------------------------------------------------------------


def _load_mlp(d_in, layers):
    """STL's ``load_mlp``: Linear-BN-ReLU blocks, a bias-free Linear at the end."""
    sizes = [d_in, *layers]
    mods = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        mods += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    mods.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*mods)


class RepoSTL(nn.Module):
    """STL's ``STL`` without backbone and invariance projector (the harness's base method
    plays the invariant part): trans_backbone, EquiTrans' hypernet, equi/trans projectors."""

    def __init__(self, d, t, h, n, temperature=0.2, equi=1.0, trans=0.1):
        super().__init__()
        self.d = d
        self.trans_backbone = _load_mlp(2 * d, [t, t])
        self.hypernet = nn.Linear(t, d * d, bias=False)
        self.equi_projector = _load_mlp(d, [h, t])
        self.trans_projector = _load_mlp(t, [t, t])
        self.even_idxs = 2 * torch.arange(n // 2)
        self.odd_idxs = 2 * torch.arange(n // 2) + 1
        self.shifted_idxs = torch.flatten(torch.stack([self.odd_idxs, self.even_idxs], dim=1))
        self.temperature, self.equi, self.trans = temperature, equi, trans

    def equi_transform(self, r, t):
        # EquiTrans with one D×D block: w viewed (out, in), output = r · wᵀ.
        w = self.hypernet(t).view(-1, self.d, self.d)
        return torch.bmm(r.unsqueeze(1), w.transpose(-2, -1)).squeeze()

    def info_nce_loss(self, z1, z2):
        z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)], dim=0)
        scores = z @ z.t() / self.temperature
        n = z1.size(0)
        labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
        scores = scores.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(scores, labels)

    def forward(self, y1, y2):
        y_trans122 = self.trans_backbone(torch.cat([y1, y2], dim=-1))
        y_trans221 = self.trans_backbone(torch.cat([y2, y1], dim=-1))
        y_trans1 = torch.cat([y_trans122[self.even_idxs], y_trans221[self.even_idxs]], dim=0)
        y_trans2 = torch.cat([y_trans122[self.odd_idxs], y_trans221[self.odd_idxs]], dim=0)
        y_pred1 = self.equi_transform(y2, y_trans221[self.shifted_idxs])
        y_pred2 = self.equi_transform(y1, y_trans122[self.shifted_idxs])
        z_equi = torch.cat([self.equi_projector(y1), self.equi_projector(y2)], dim=0)
        z_equi_pred = torch.cat([self.equi_projector(y_pred1), self.equi_projector(y_pred2)], dim=0)
        equi_loss = self.info_nce_loss(z_equi, z_equi_pred)
        z_trans1, z_trans2 = self.trans_projector(y_trans1), self.trans_projector(y_trans2)
        trans_loss = self.info_nce_loss(z_trans1, z_trans2)
        return self.equi * equi_loss, self.trans * trans_loss


# The repository's module ↔ the add-on's, weights copied one to one.
REPO_STL_MODULES = ("trans_backbone", "hypernet", "equi_projector", "trans_projector")
STL_MODULES = ("trans_encoder", "hypernet", "equi_projector", "trans_projector")


def _stl_repo(add, n):
    repo = RepoSTL(add.feature_width, add.trans_projector[0].out_features,
                   add.equi_projector[0].out_features, n).double()  # fmt: skip
    for theirs, ours in zip(REPO_STL_MODULES, STL_MODULES, strict=True):
        getattr(repo, theirs).load_state_dict(getattr(add, ours).state_dict())
    return repo.train()


def test_stl_original_is_the_repository_forward_in_train_mode():
    add, online = stl_module.fixed_inputs()
    add.original = True
    h = [o.cls.requires_grad_(True) for o in online]
    got = add.losses(None, {}, online, None, None)
    repo = _stl_repo(add, len(h[0]))
    equi, trans = repo(*h)
    _assert_close(got["loss_stl_equi"], equi, "L_equi")
    _assert_close(got["loss_stl_trans"], trans, "L_trans")
    w_ours = [p for m in STL_MODULES for p in getattr(add, m).parameters()]
    w_theirs = [p for m in REPO_STL_MODULES for p in getattr(repo, m).parameters()]
    total = got["loss_stl_equi"] + got["loss_stl_trans"]
    g_got = _grads(total, h + w_ours)
    g_want = _grads(equi + trans, h + w_theirs)
    for i, (a, b) in enumerate(zip(g_got, g_want, strict=True)):
        _assert_close(a, b, f"gradient {i}")
    # Projecting [h1; h2] jointly (versions ≤ 2's @original) is not the repository's.
    p = add.equi_projector
    z_joint = p(torch.cat(h))
    assert not torch.allclose(z_joint, torch.cat([p(x) for x in h]), atol=1e-3)


def test_stl_default_differs_from_the_repository_by_the_loss_only():
    # Same projections, SER's loss: the symmetric MoCo-v3 InfoNCE on the repository's z's.
    add, online = stl_module.fixed_inputs()
    got = add.losses(None, {}, online, None, None)
    repo = _stl_repo(add, len(online[0].cls))
    h1, h2 = (o.cls for o in online)
    captured = []
    repo.info_nce_loss = lambda a, b: captured.append((a, b)) or torch.zeros(())
    repo(h1, h2)
    (z, z_hat), (za, zb) = captured

    def moco(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).detach().t() / 0.2
        return F.cross_entropy(logits, torch.arange(len(q))) * 0.4

    _assert_close(got["loss_stl_equi"], moco(z, z_hat) + moco(z_hat, z), "L_equi")
    _assert_close(got["loss_stl_trans"], 0.1 * (moco(za, zb) + moco(zb, za)), "L_trans")


def test_stl_measurement_is_the_code_s_numbers():
    v = stl_module.loss_effect_numbers()
    add, online = stl_module.fixed_inputs()
    add.original = True
    equi, trans = _stl_repo(add, len(online[0].cls))(*(o.cls for o in online))
    assert v["original_equi"] == pytest.approx(equi.item(), rel=1e-9)
    assert v["original_trans"] == pytest.approx(trans.item(), rel=1e-9)
    add.original = False
    got = add.losses(None, {}, online, None, None)
    assert v["default_equi"] == pytest.approx(got["loss_stl_equi"].item(), rel=1e-9)
    assert v["default_trans"] == pytest.approx(got["loss_stl_trans"].item(), rel=1e-9)
    line = stl_module.loss_effect()
    assert f"L_equi {v['original_equi'] / v['default_equi']:.3g}×" in line
    assert f"L_trans {v['original_trans'] / v['default_trans']:.3g}×" in line
    (d,) = [d for d in departures.DEPARTURES if d.key == "stl-projections"]
    assert d.measure == "methods.stl:loss_effect" and departures.measured(d) == line
