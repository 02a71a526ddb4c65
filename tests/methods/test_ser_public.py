"""SER computes what the public code computes (issue 13, points 2 and 3), on fixed tensors.

Point 2: the public ``equiv`` projects both token maps with ``projector_equiv`` and applies
``aug_equiv_feat`` (ρ_g) to the projected target map; ``@rho_first`` is the other order.
Point 3: ``Aug_equi(args.gpu)`` is one generator per GPU, so every rank draws its own grid
and 90° rotation each step; the token sets are gathered with their sizes
(``concat_all_gather_different_shape``) and the loss is the mean over every rank's query
tokens. ``@shared_grid`` draws once per global step for all ranks.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image

from harness import config as C
from harness.data.batches import PretrainBatches, build_policy
from harness.model.group import D4, Element, act_each
from harness.parallel import dist as hdist
from tests.helpers import free_port

TAU = 0.3


def _ser(name="moco_v3+ser"):
    torch.manual_seed(0)
    return C.build_method(C.resolve(name, "micro")).addons[0].double()


def _maps(seed, b, d, src, dst):
    g = torch.Generator().manual_seed(seed)
    tmap = torch.randn(b, d, *src, generator=g, dtype=torch.float64)
    qmap = torch.randn(b, d, *dst, generator=g, dtype=torch.float64)
    k90 = int(torch.randint(0, 4, (1,), generator=g))
    flips = torch.randint(0, 2, (b,), generator=g).tolist()
    rot180 = torch.randint(0, 2, (b,), generator=g).tolist()
    # As the public policy: one rot90 per batch (outputs stack), flip and rot180 per sample.
    els = [
        Element(D4(f, k90 + 2 * r), src, D4(0, k90).map_size(dst)) for f, r in zip(flips, rot180)
    ]
    return tmap, qmap, els


def _formula(t_tokens, q_tokens, t_img, q_img, positive, tau):
    """−log(exp(s_pp/τ) / Σ over the positive and other images' target tokens), per query."""
    s = F.normalize(q_tokens, dim=1) @ F.normalize(t_tokens, dim=1).t() / tau
    out = []
    for j in range(len(q_tokens)):
        keep = (t_img != q_img[j]).clone()
        keep[positive[j]] = True
        out.append(torch.logsumexp(s[j][keep], 0) - s[j, positive[j]])
    return torch.stack(out)


def _tokens(x):
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def test_projector_then_rho_is_the_default_and_rho_first_is_named():
    ser = _ser()
    assert not ser.rho_first and not ser.shared_grid
    d = ser.projector.net[0].in_features
    tmap, qmap, els = _maps(1, 3, d, (4, 4), (3, 5))
    img = torch.arange(3).repeat_interleave(15)
    idx = torch.arange(45)
    # The public order: project, then resize/rotate/flip the projected target map.
    public = _formula(
        _tokens(act_each(ser.projector(tmap), els)),
        _tokens(ser.projector(qmap)),
        img,
        img,
        idx,
        ser.tau,
    ).mean()
    other = _formula(
        _tokens(ser.projector(act_each(tmap, els))),
        _tokens(ser.projector(qmap)),
        img,
        img,
        idx,
        ser.tau,
    ).mean()
    got = ser._direction(tmap, qmap, els)
    assert torch.allclose(got, public, rtol=1e-12, atol=0)
    # The two orders differ by far more than float64 noise once the grid changes.
    assert abs(float((public - other).detach())) > 1e-6 * abs(float(public.detach()))
    first = _ser("moco_v3+ser@rho_first")
    first.load_state_dict(ser.state_dict())
    assert first.rho_first
    assert torch.allclose(first._direction(tmap, qmap, els), other, rtol=1e-12, atol=0)


def test_orders_agree_when_rho_only_permutes():
    # ρ_g without a rescale is a permutation of tokens: it commutes with a per-token projector.
    ser, first = _ser(), _ser("moco_v3+ser@rho_first")
    first.load_state_dict(ser.state_dict())
    d = ser.projector.net[0].in_features
    tmap, qmap, els = _maps(2, 2, d, (4, 4), (4, 4))
    assert torch.allclose(
        ser._direction(tmap, qmap, els), first._direction(tmap, qmap, els), rtol=1e-12, atol=0
    )


def _batches(name, rank, world):
    cfg = C.resolve(name, "micro")
    m = C.build_method(cfg)
    policy = build_policy(m, cfg)
    imgs = [(Image.new("RGB", (40, 40), (i * 9 % 255, 80, 120)), 0) for i in range(64)]
    b = PretrainBatches(imgs, policy, 16, seed=5)
    b.rank, b.world, b.local_batch = rank, world, 16 // world
    b.n_equiv = policy.n_equiv(b.local_batch)
    return b


def _grids(batch):
    return [(g_a[0].dst, g_b[0].dst, g_a[0].d.k % 2) for _, _, g_a, g_b in batch["equiv"]["pairs"]]


def test_every_rank_draws_its_own_grid_and_rotation_unless_shared():
    steps = range(6)
    own = [[_grids(_batches("moco_v3+ser@r0.5", r, 2)[s]) for s in steps] for r in (0, 1)]
    assert own[0] != own[1]  # ranks' grids differ on some step
    shared = [
        [_grids(_batches("moco_v3+ser@r0.5@shared_grid", r, 2)[s]) for s in steps] for r in (0, 1)
    ]
    assert shared[0] == shared[1]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ser = _ser()
        d = ser.projector.net[0].in_features
        # Different grids per rank, as per-rank draws give.
        dst = [(3, 5), (4, 4)][rank]
        tmap, qmap, els = _maps(10 + rank, 2, d, (4, 4), dst)
        loss = ser._direction(tmap, qmap, els)
        loss.backward()
        hdist.average_gradients(list(ser.parameters()))
        torch.save(
            {"loss": loss.detach(), "grad": ser.projector.net[0].weight.grad}, f"{out}/{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ranks_with_different_grids_give_the_mean_over_all_tokens(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    # One process, the union: every rank's target tokens, each query against all of them.
    ser = _ser()
    d = ser.projector.net[0].in_features
    ts, qs, timg = [], [], []
    for r, dst in enumerate([(3, 5), (4, 4)]):
        tmap, qmap, els = _maps(10 + r, 2, d, (4, 4), dst)
        ts.append(_tokens(act_each(ser.projector(tmap), els)))
        qs.append(_tokens(ser.projector(qmap)))
        n = dst[0] * dst[1]
        timg.append(torch.arange(2).repeat_interleave(n) + 2 * r)
    t, q, img = torch.cat(ts), torch.cat(qs), torch.cat(timg)
    per_query = _formula(t, q, img, img, torch.arange(len(q)), ser.tau)
    want = per_query.mean()
    want.backward()
    mean = (got[0]["loss"] + got[1]["loss"]) / 2
    assert torch.allclose(mean, want, rtol=1e-10, atol=0)
    # Not the mean of per-rank means: 30 and 32 query tokens weigh differently.
    naive = (per_query[:30].mean() + per_query[30:].mean()) / 2
    assert abs(float((naive - want).detach())) > 1e-6
    g = ser.projector.net[0].weight.grad
    assert torch.allclose(got[0]["grad"], g, rtol=1e-9, atol=1e-12)
    assert torch.allclose(got[1]["grad"], g, rtol=1e-9, atol=1e-12)


def _erl_local4_pair(a, b, n_images, tau):
    """One pair term of the public ``erl_local4``, transcribed from its formula: ``bs`` is the
    number of images (set before the maps are flattened to tokens), so the positives are the
    first ``bs`` diagonal entries of the cross block, the same-image masks sit at offsets of
    ``bs`` rows and the normaliser is 2·bs."""
    bs, n = n_images, len(a)
    per = n // bs
    z = F.normalize(torch.cat([a, b]), dim=1)
    s = z @ z.t() / tau
    num = 2.0 * torch.trace(s[:bs, bs:])
    mask = torch.ones_like(s)
    for r0, c0 in ((0, 0), (0, bs), (bs, 0), (bs, bs)):
        for i in range(bs):
            mask[r0 + i * per : r0 + (i + 1) * per, c0 + i * per : c0 + (i + 1) * per] = 0
    mask[:bs, bs:].fill_diagonal_(1)
    mask[bs:, :bs].fill_diagonal_(1)
    denom = torch.log((s.exp() * mask).sum(0)).sum()
    return (denom - num) / (2 * bs)


def test_public_2plus4_loss_cannot_tell_aligned_from_shuffled_maps_and_the_harness_can():
    # Issue 13, point 10: why the harness's 2+4 loss has no public-code switch.
    ser = _ser()
    d = ser.projector.net[0].in_features
    g = torch.Generator().manual_seed(7)
    tmap = torch.randn(4, d, 4, 4, generator=g, dtype=torch.float64)
    shuffled = tmap.flatten(2)[:, :, torch.randperm(16, generator=g)].view_as(tmap)
    ident = [Element.identity((4, 4))] * 4
    with torch.no_grad():
        t = _tokens(ser.projector(tmap))
        pub = [_erl_local4_pair(t, _tokens(ser.projector(q)), 4, 0.2) for q in (tmap, shuffled)]
        ours = [ser._direction(tmap, q, ident) for q in (tmap, shuffled)]
    assert abs(float(pub[0] - pub[1])) < 1e-2 * abs(float(pub[0]))
    assert float(ours[1] - ours[0]) > 0.5
