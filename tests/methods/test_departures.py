"""Every departure states its effect as measured now (``methods/departures.py``, ``measure``),
and the measured numbers are the ones an independent computation gives (issue 24, item 6).

References, re-implemented here on the same fixed tensors:
- aitrics-chris/SER at dbe5e9361953a28258a7f24d92f742a162376c77: ``vision_transformer.py``
  ``interpolate_pos_encoding`` (bicubic, scale_factor ((w0+0.1)/√N, (h0+0.1)/√N));
  ``builder/barlowtwins.py`` (``c.div_``; ``torch.distributed.all_reduce(c)`` in place);
  ``builder/moco.py`` ``erl_local4``; branch ``augself`` at
  0bcab6c7db7d10ff6be322402e85e680f5a2e6ec, ``builder/utils.py`` ``extract_diff``.
- timm's ``resample_abs_pos_embed``: F.interpolate to ``size`` (bicubic, antialias off).
- DINO's ``DINOLoss``: CE of the centred teacher softmax (τ_t) against the student's
  log-softmax (τ_s 0.1), over pairs of different views.
"""

import importlib
import math
import re

import pytest
import torch
import torch.nn.functional as F

from harness.instruments import effects as E
from harness.instruments import recipe_effects as R
from methods.departures import DEPARTURES, Departure, markdown, measured, render

# Entries whose measuring function lives in harness/instruments/effects.py (this file checks their numbers);
# the others' owners check theirs (tests/methods/test_addons_repositories.py, test_essl_public.py…).
OURS = {d.key for d in DEPARTURES if (d.measure or "").startswith("harness.instruments.effects:")}
NUMBER = re.compile(r"\d")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _entry(key: str) -> Departure:
    (d,) = [d for d in DEPARTURES if d.key == key]
    return d


def _line(key: str) -> str:
    return measured(_entry(key))


def _pct(x: float) -> str:
    return f"{100 * x:.2g} %"


# ---- every entry -------------------------------------------------------------------------


def test_every_departure_with_a_switch_has_a_measure():
    missing = [d.key for d in DEPARTURES if d.other is not None and d.measure is None]
    assert not missing, f"departures with a switch but no measure: {missing}"


def test_keys_are_unique_and_measures_name_a_module_and_function():
    keys = [d.key for d in DEPARTURES]
    assert len(keys) == len(set(keys))
    for d in DEPARTURES:
        if d.measure is None:
            continue
        module, sep, name = d.measure.partition(":")
        assert sep and module and name, d.key
        assert callable(getattr(importlib.import_module(module), name)), d.measure


@pytest.mark.parametrize("d", [d for d in DEPARTURES if d.measure], ids=lambda d: d.key)
def test_each_measure_runs_and_returns_one_line_with_a_number(d):
    line = measured(d)
    assert isinstance(line, str) and line and "\n" not in line, d.key
    assert NUMBER.search(line), f"{d.key}: no number in {line!r}"
    assert len(line) < 300, f"{d.key}: one short line, got {len(line)} characters"


def test_unmeasured_entries_say_why():
    d = Departure("x", "nowhere", "a", "b", None, "why")
    assert measured(d).startswith("not measured")


def test_listing_and_table_carry_every_measured_line():
    text, table = render(), markdown()
    assert table.splitlines()[0].endswith("| measured effect |")
    rows = table.splitlines()[2:]
    assert len(rows) == len(DEPARTURES)
    for d, row in zip(DEPARTURES, rows):
        line = measured(d)
        assert f"  measured:    {line}" in text, d.key
        assert row.endswith(f"| {line.replace('|', chr(92) + '|')} |"), d.key
        # Six cells: no unescaped '|' inside one.
        assert len(re.split(r"(?<!\\)\|", row)) == 8, d.key


def test_no_measured_number_is_hard_coded_in_the_texts_measured_here():
    # The numbers live in the measure lines; the texts say what differs, not by how much.
    for key, stale in {
        "pos-embed-interpolation": "11–14",
        "ser-projector-order": "1.7e-5",
        "augself-targets": "130 of 256",
        "barlow-twins-gradient-scale": "2.000",
        "ser-2plus4-loss": "2049",
    }.items():
        d = _entry(key)
        assert stale not in d.public + d.harness + d.why, key


def test_measuring_leaves_the_global_rng_and_threads_alone():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    measured.cache_clear()
    measured(_entry("augself-targets"))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


# ---- pos-embed-interpolation --------------------------------------------------------------


def _public_interp(patch: torch.Tensor, grid) -> torch.Tensor:
    """SER's interpolate_pos_encoding on a 1×N×D patch table: w0 = patch rows, h0 = columns."""
    n, d = patch.shape[1:]
    side = int(math.sqrt(n))
    w0, h0 = grid[0] + 0.1, grid[1] + 0.1
    x = F.interpolate(
        patch.reshape(1, side, side, d).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    assert (int(w0), int(h0)) == tuple(x.shape[-2:])
    return x.permute(0, 2, 3, 1).reshape(1, -1, d)


def _timm_resample(patch: torch.Tensor, grid) -> torch.Tensor:
    n, d = patch.shape[1:]
    side = int(math.sqrt(n))
    x = F.interpolate(
        patch.reshape(1, side, side, d).permute(0, 3, 1, 2),
        size=tuple(grid),
        mode="bicubic",
        antialias=False,
    )
    return x.permute(0, 2, 3, 1).reshape(1, -1, d)


def _sincos(h, w, dim, temperature=10000.0):
    """MoCo-v3's build_2d_sincos_position_embedding (quarters sin w, cos w, sin h, cos h)."""
    gh, gw = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    q = dim // 4
    omega = 1.0 / temperature ** (torch.arange(q, dtype=torch.float64) / q)
    ow, oh = gw.flatten()[:, None] * omega, gh.flatten()[:, None] * omega
    return torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], dim=1)[None]


def _relative(patch, grids):
    out = []
    for grid in grids:
        a, t = _public_interp(patch, grid), _timm_resample(patch, grid)
        out.append(float((t - a).norm() / a.norm()))
    return out


def test_pos_interp_measure_is_the_two_formulas_difference():
    gen = torch.Generator().manual_seed(0)
    rand = torch.randn(1, 197, 384, generator=gen, dtype=torch.float64)[:, 1:]
    tables = {"random": rand, "sincos": _sincos(14, 14, 384)}
    every = E.ser_scale_grids()
    want = {k: _relative(t, every) for k, t in tables.items()}
    few = _relative(rand, E.POS_GRIDS)
    for name, table in E.pos_tables().items():
        assert list(E.pos_interp_relative(table, every).values()) == pytest.approx(
            want[name], rel=1e-5
        )
    assert list(E.pos_interp_relative(E.pos_tables()["random"]).values()) == pytest.approx(
        few, rel=1e-5
    )
    line = _line("pos-embed-interpolation")
    for rel in (few, want["random"], want["sincos"]):
        assert f"{100 * min(rel):.2g}–{100 * max(rel):.2g} %" in line, line
    # The 8–19 % over SER's grids; 11–14 % at the four grids the fidelity tests use.
    assert min(want["random"]) > 0.08 and max(want["random"]) < 0.19
    assert min(few) > 0.1 and max(few) < 0.15


def test_the_scale_grids_are_those_the_public_policy_draws():
    from harness.model.group import sample_public

    every = set(E.ser_scale_grids())
    drawn = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(2000):
        ga, gb = sample_public(gen, 1, (14, 14))
        for g in (ga[0], gb[0]):
            # The drawn grid, before the per-batch rot90 turns it (D4(0, k) swaps the axes).
            grid = g.dst if g.d.k % 2 == 0 else g.dst[::-1]
            drawn.add(tuple(grid))
    drawn.discard((14, 14))
    assert drawn <= every
    assert len(drawn) >= len(every) - 4  # the lattice's edges are rare draws


# ---- ser-projector-order ------------------------------------------------------------------


def _token_infonce(t, q, img, tau):
    """Query j's positive is target token j; its denominator also holds every token of the
    other images (same-image negatives removed), as the public equiv loss."""
    s = F.normalize(q, dim=1) @ F.normalize(t, dim=1).t() / tau
    keep = img[:, None] != img[None, :]
    keep |= torch.eye(len(q), dtype=torch.bool)
    s = s.masked_fill(~keep, float("-inf"))
    return (torch.logsumexp(s, 1) - s.diagonal()).mean()


@pytest.mark.parametrize("smooth", [False, True])
def test_rho_first_measure_is_the_two_orders_relative_difference(smooth):
    from harness.model.group import act_each, relative, sample_public
    from methods.heads import TokenProjector

    torch.manual_seed(0)
    proj = TokenProjector(384, 512, 512)

    def tok(x):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

    want = []
    with torch.no_grad():
        for s in range(4):
            gen = torch.Generator().manual_seed(s)
            ga, gb = sample_public(gen, 2, (14, 14))
            rel = relative(ga, gb)
            if smooth:
                low = torch.randn(2, 384, 4, 4, generator=gen)
                tmap = F.interpolate(low, size=ga[0].dst, mode="bicubic")
            else:
                tmap = torch.randn(2, 384, *ga[0].dst, generator=gen)
            qmap = act_each(tmap, rel)
            qmap = qmap + torch.randn(qmap.shape, generator=gen) * tmap.std()
            h, w = qmap.shape[-2:]
            img = torch.arange(2).repeat_interleave(h * w)
            # The public order projects first and resizes/turns the projected map.
            public = _token_infonce(tok(act_each(proj(tmap), rel)), tok(proj(qmap)), img, 0.3)
            other = _token_infonce(tok(proj(act_each(tmap, rel))), tok(proj(qmap)), img, 0.3)
            want.append((float(public), float(other)))
    got = E.rho_order_losses(smooth=smooth)
    assert [g[0] for g in got] == pytest.approx([w[0] for w in want], rel=1e-5)
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-5)
    rel = sorted(abs(b - a) / a for a, b in want)
    assert f"{100 * rel[0]:.2g}–{100 * rel[-1]:.2g} %" in _line("ser-projector-order")


# ---- ser-elements-per-gpu -----------------------------------------------------------------


def _rank_batches(name, world, seed=0):
    from PIL import Image

    from harness import config as C
    from harness.data.batches import PretrainBatches, build_policy

    cfg = C.resolve(name, "micro")
    policy = build_policy(C.build_method(cfg), cfg)
    imgs = [(Image.new("RGB", (40, 40), (i * 9 % 255, 80, 120)), 0) for i in range(64)]
    out = []
    for rank in range(world):
        b = PretrainBatches(imgs, policy, 16, seed=seed)
        b.rank, b.world, b.local_batch = rank, world, 16 // world
        b.n_equiv = policy.n_equiv(b.local_batch)
        out.append(b)
    return out


def _draw(batch):
    (_, _, ga, gb), *_ = batch["equiv"]["pairs"]
    return ga[0].dst, gb[0].dst, ga[0].d.k % 2, gb[0].d.k % 2


@pytest.mark.parametrize("shared", [False, True])
def test_shared_grid_measure_counts_what_the_batches_draw(shared):
    # The measure re-draws as PretrainBatches seeds its generators: the same count at micro.
    name = "moco_v3+ser@r0.5" + ("@shared_grid" if shared else "")
    ranks = _rank_batches(name, 2)
    steps = 5
    differ = sum(len({_draw(r[s]) for r in ranks}) > 1 for s in range(steps))
    assert E.grid_draws(2, steps, shared, base=(4, 4), n=ranks[0].n_equiv) == differ
    assert (differ == 0) == shared
    own, same = E.grid_draws(), E.grid_draws(shared=True)
    assert f"on {own} of 100 steps ({same} with @shared_grid)" in _line("ser-elements-per-gpu")


# ---- frozen-patch-embed-init --------------------------------------------------------------


def test_patch_embed_init_measure_is_the_two_bounds_ratio():
    # Conv2d's default: uniform ±1/√fan_in; MoCo-v3's: uniform ±√(6/(3·p² + D)).
    fan_in, width = 3 * 16 * 16, 384
    public, moco = 1 / math.sqrt(fan_in), math.sqrt(6 / (fan_in + width))
    line = _line("frozen-patch-embed-init")
    assert f"{moco / public:.2f}× as wide" in line
    assert f"std {moco / math.sqrt(3):.2g} vs {public / math.sqrt(3):.2g}" in line
    assert f"±{public:.2g}" in line and "bias 0 vs" in line


# ---- barlow-twins-gradient-scale ----------------------------------------------------------


@pytest.mark.parametrize("world", [2, 4])
def test_barlow_grad_scale_measure_is_one_over_w(world):
    # Each rank's in-place all_reduce passes back only its own rows' share of C: summed over
    # ranks that is the whole gradient, which DDP's average divides by W.
    assert R.barlow_grad_ratio(world) == pytest.approx(1 / world, rel=1e-10)
    assert f"{1 / 2:.3f}× the exact one at W = 2" in _line("barlow-twins-gradient-scale")


# ---- augself-targets ----------------------------------------------------------------------


def _extract_diff_crop(p1, p2):
    """SER's (augself branch) extract_diff crop entry: both centres mirrored with view 1's
    flip; crops as [i/H, j/W, h/H, w/W]."""
    from harness.data.augment import IDX

    def crop(p):
        hh, ww = p[:, IDX["img_h"]], p[:, IDX["img_w"]]
        return torch.stack(
            [p[:, IDX["top"]] / hh, p[:, IDX["left"]] / ww, p[:, IDX["height"]] / hh,
             p[:, IDX["width"]] / ww], 1,
        )  # fmt: skip

    c1, c2 = crop(p1), crop(p2)
    f1 = p1[:, IDX["flip"]] > 0
    m1, m2 = c1[:, :2] + c1[:, 2:] / 2, c2[:, :2] + c2[:, 2:] / 2
    m1[f1, 1], m2[f1, 1] = 1 - m1[f1, 1], 1 - m2[f1, 1]
    return torch.cat([m1 - m2, c1[:, 2:] - c2[:, 2:]], 1)


def _paper_crop(p1, p2):
    """The AugSelf paper's: each view's centre mirrored by its own flip."""
    from harness.data.augment import IDX

    def vec(p):
        hh, ww = p[:, IDX["img_h"]], p[:, IDX["img_w"]]
        cy = (p[:, IDX["top"]] + p[:, IDX["height"]] / 2) / hh
        cx = (p[:, IDX["left"]] + p[:, IDX["width"]] / 2) / ww
        cx = torch.where(p[:, IDX["flip"]] > 0, 1 - cx, cx)
        return torch.stack([cy, cx, p[:, IDX["height"]] / hh, p[:, IDX["width"]] / ww], 1)

    return vec(p1) - vec(p2)


def test_augself_measure_counts_the_pairs_whose_targets_differ():
    from harness.data.augment import IDX

    pa, pb = R.augself_pairs()
    d = [_extract_diff_crop(x, y) - _paper_crop(x, y) for x, y in ((pa, pb), (pb, pa))]
    differ = ((d[0].abs() > 1e-12) | (d[1].abs() > 1e-12)).any(1)
    one_flipped = pa[:, IDX["flip"]] != pb[:, IDX["flip"]]
    assert torch.equal(differ, one_flipped)  # (no crop centred exactly at x = ½ here)
    x = torch.cat(d)[:, 1].abs().sum() / (2 * differ.sum())
    line = _line("augself-targets")
    assert f"differ on {int(differ.sum())} of 256 pairs" in line
    assert f"by {float(x):.3g} on average" in line


# ---- kornia-photometric -------------------------------------------------------------------


def test_photometric_measure_is_zero_without_the_ops_that_differ():
    # Identity parameters (no jitter, grayscale, blur or solarize): the flavours render alike,
    # so the measured gap is the ops' (tests/data/test_kornia_flavour.py checks each op).
    from harness.data.augment import IDX, blur_kernel
    from harness.data.photometric import render

    img, params = R.photometric_images()
    off = params.clone()
    for k in ("jitter", "gray", "blur", "solarize"):
        off[:, IDX[k]] = 0
    a, b = (
        render(img, off, blur_kernel(112, fl)[0], flavour=fl) for fl in ("kornia", "torchvision")
    )
    assert torch.equal(a, b)
    rel = R.photometric_difference()
    assert rel > 0.01
    assert f"render {_pct(rel)} apart" in _line("kornia-photometric")


# ---- recipes ------------------------------------------------------------------------------


def _dino_loss(student, teacher, t_temp, s_temp=0.1):
    total, n = 0.0, 0
    for i, t in enumerate(teacher):
        q = torch.softmax(t / t_temp, -1)
        for v, s in enumerate(student):
            if v != i:
                total += float(torch.sum(-q * torch.log_softmax(s / s_temp, -1), -1).mean())
                n += 1
    return total / n


def test_dino_recipe_measure_is_the_two_temperatures_loss_gap():
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(8, 256, generator=gen, dtype=torch.float64) for _ in range(4)]
    teacher = [torch.randn(8, 256, generator=gen, dtype=torch.float64) for _ in range(2)]
    a, b = _dino_loss(student, teacher, 0.07), _dino_loss(student, teacher, 0.04)
    line = _line("dino-recipe")
    assert "0.07 vs 0.04" in line and f"differs by {_pct(abs(b - a) / a)}" in line


def test_barlow_recipe_measure_is_per_tensor_against_global_clipping():
    from harness import config as C

    torch.manual_seed(0)
    m = C.build_method(C.resolve("barlow_twins", "micro"))
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen) for p in m.parameters() if p.requires_grad]
    per = [g * min(1.0, 0.3 / (float(g.norm()) + 1e-6)) for g in grads]
    total = float(torch.cat([g.flatten() for g in grads]).norm())
    glob = [g * min(1.0, 0.3 / (total + 1e-6)) for g in grads]
    a, b = torch.cat([g.flatten() for g in per]), torch.cat([g.flatten() for g in glob])
    rel = float((a - b).norm() / a.norm())
    assert f"differs by {_pct(rel)}" in _line("barlow-twins-recipe")


# ---- SER's gradient and 2+4 loss ----------------------------------------------------------


def test_ser_gradient_measure_is_nonzero_by_default_and_zero_detached():
    on, off, inv, k = E.ser_gradient_norms()
    assert on > 1e-3 and inv > 1e-3 and off == 0.0 and k == 3
    line = _line("ser-gradient")
    assert f"blocks 1–3‖ = {on:.2g} by default (L_inv's {inv:.2g}), 0 with" in line


def test_2plus4_measure_is_the_public_formula():
    from tests.methods.test_ser_public import _erl_local4_pair as public_pair

    (pa, ps), (ha, hs) = R.ser_2plus4_losses()
    torch.manual_seed(0)
    from methods.heads import TokenProjector

    proj = TokenProjector(384, 512, 512).double()
    g = torch.Generator().manual_seed(7)
    tmap = torch.randn(4, 384, 4, 4, generator=g, dtype=torch.float64)
    shuffled = tmap.flatten(2)[:, :, torch.randperm(16, generator=g)].view_as(tmap)
    with torch.no_grad():

        def tok(x):
            return proj(x).permute(0, 2, 3, 1).reshape(-1, 512)

        want = [float(public_pair(tok(tmap), tok(q), 4, 0.2)) for q in (tmap, shuffled)]
        img = torch.arange(4).repeat_interleave(16)
        ours = [float(_token_infonce(tok(tmap), tok(q), img, 0.2)) for q in (tmap, shuffled)]
    assert (pa, ps) == pytest.approx(tuple(want), rel=1e-10)
    assert (ha, hs) == pytest.approx(tuple(ours), rel=1e-10)
    assert abs(ps - pa) < 1e-3 * pa and hs - ha > 1.0  # the public one cannot tell them apart
    assert f"{want[0]:.6g} on aligned and {want[1]:.6g} on shuffled" in _line("ser-2plus4-loss")
