"""The measured size of each departure's effect (``methods/departures.py``, field ``measure``).

Each function takes no argument, computes the default and the other behaviour on fixed
tensors (seeded, CPU, well under a second) through the harness's own code, and returns one
line: the number, then what it was measured on. ``harness methods --departures`` and README's
table print these lines, so a departure's text never carries a number that can drift.
tests/methods/test_departures.py re-derives each number independently.
"""

from __future__ import annotations

import math

import torch

# The grids SER's scale views and the fidelity tests put off the 14×14 base grid.
POS_GRIDS = ((13, 15), (15, 13), (16, 16), (12, 16))
BASE = (14, 14)
WIDTH = 384  # ViT-S, the paper's backbone


def pct(lo: float, hi: float) -> str:
    a, b = f"{100 * lo:.2g}", f"{100 * hi:.2g}"
    return f"{a} %" if a == b else f"{a}–{b} %"


def sci(x: float) -> str:
    return f"{x:.2g}" if 1e-2 <= abs(x) < 1e3 or x == 0 else f"{x:.1e}"


def fmt3(x: float) -> str:
    return f"{x:.3g}"


# ---- backbone ------------------------------------------------------------------------------


def _pos_backbones():
    from harness.model.backbone import Backbone, BackboneConfig

    cfg = dict(img_size=224, patch_size=16, width=WIDTH, depth=1, heads=6)
    return [Backbone(BackboneConfig(**cfg, pos_interp=k)).double() for k in ("public", "timm")]


def ser_scale_grids(scale=(0.7, 1.3), aspect=(3 / 4, 4 / 3), steps: int = 61) -> tuple:
    """The token grids off 14×14 that SER's scale views draw (``group._grid``'s rounding of
    area × aspect), over a ``steps`` × ``steps`` lattice of the two ranges."""
    grids = set()
    for i in range(steps):
        area = BASE[0] * BASE[1] * (scale[0] + (scale[1] - scale[0]) * i / (steps - 1))
        for j in range(steps):
            lo, hi = math.log(aspect[0]), math.log(aspect[1])
            r = math.exp(lo + (hi - lo) * j / (steps - 1))
            grids.add((max(1, round(math.sqrt(area / r))), max(1, round(math.sqrt(area * r)))))
    grids.discard(BASE)
    return tuple(sorted(grids))


def pos_interp_relative(table: torch.Tensor, grids=POS_GRIDS) -> dict[tuple[int, int], float]:
    """‖timm − public‖ / ‖public‖ of the interpolated table (1×(1+N)×D, [CLS] slot first) on
    each of ``grids``, through ``Backbone._pos`` under both settings."""
    public, timm = _pos_backbones()
    out = {}
    with torch.no_grad():
        for b in (public, timm):
            b.vit.pos_embed.copy_(table)
        for grid in grids:
            a, t = public._pos(grid)[:, 1:], timm._pos(grid)[:, 1:]
            out[grid] = float((t - a).norm() / a.norm())
    return out


def pos_tables() -> dict[str, torch.Tensor]:
    """A learned table's far-from-smooth start (N(0, 1), seed 0) and MoCo-v3's sin-cos one."""
    from harness.model.backbone import sincos_2d

    gen = torch.Generator().manual_seed(0)
    n = BASE[0] * BASE[1]
    rand = torch.randn(1, 1 + n, WIDTH, generator=gen, dtype=torch.float64)
    sincos = torch.cat([torch.zeros(1, 1, WIDTH), sincos_2d(BASE, WIDTH)], dim=1).double()
    return {"random": rand, "sincos": sincos}


def pos_interp_effect() -> str:
    tables, every = pos_tables(), ser_scale_grids()
    few = sorted(pos_interp_relative(tables["random"]).values())
    rand, sc = (sorted(pos_interp_relative(tables[k], every).values()) for k in tables)
    grids = ", ".join(f"{h}×{w}" for h, w in POS_GRIDS)
    return (
        f"timm's table differs from the public one by {pct(few[0], few[-1])} (relative L2, "
        f"N(0, 1) table) at {grids}, {pct(rand[0], rand[-1])} over the {len(every)} grids "
        f"SER's scale views draw; {pct(sc[0], sc[-1])} there on MoCo-v3's sin-cos table"
    )


def patch_embed_init_effect() -> str:
    from harness.model.backbone import Backbone, BackboneConfig

    cfg = dict(img_size=224, patch_size=16, width=WIDTH, depth=1, heads=6)
    projs = []
    for init in ("public", "moco_v3"):
        torch.manual_seed(0)
        b = Backbone(
            BackboneConfig(**cfg, moco_init=True, frozen_patch_embed=True, patch_embed_init=init)
        )
        projs.append(b.vit.patch_embed.proj)
    (pw, pb), (mw, mb) = ((p.weight.detach(), p.bias.detach()) for p in projs)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ratio = float(projs[1](x).norm() / projs[0](x).norm())
    ws, ps = float(mw.std()), float(pw.std())
    mbias, pbias = float(mb.abs().max()), float(pb.abs().max())
    return (
        f"MoCo-v3's weights are {ws / ps:.2f}× as wide (std {sci(ws)} vs {sci(ps)}), bias "
        f"{sci(mbias)} vs up to ±{sci(pbias)}; patch tokens of N(0, 1) images {ratio:.2f}× "
        f"the norm"
    )


# ---- SER -----------------------------------------------------------------------------------


def rho_order_losses(seeds=range(4), n: int = 2, smooth: bool = False) -> list:
    """(public order, @rho_first) L_equiv direction on fixed tensors: ``n`` ViT-S-wide token
    maps at the grids of SER's public policy (seeded draws), N(0, 1) per token or (``smooth``)
    bicubic from a 4×4 N(0, 1) map; the query map ρ_g(target) plus N(0, 1) noise of the map's
    scale; one projector 384 → 512 → 512 for both orders, τ 0.3."""
    from harness.model.group import act_each, relative, sample_public
    from methods.heads import TokenProjector
    from methods.ser import SER

    torch.manual_seed(0)
    ser = SER("moco_v3")
    ser.projector = TokenProjector(WIDTH, 512, 512)
    out = []
    with torch.no_grad():
        for s in seeds:
            gen = torch.Generator().manual_seed(s)
            ga, gb = sample_public(gen, n, BASE)
            rel = relative(ga, gb)
            if smooth:
                low = torch.randn(n, WIDTH, 4, 4, generator=gen)
                tmap = torch.nn.functional.interpolate(low, size=ga[0].dst, mode="bicubic")
            else:
                tmap = torch.randn(n, WIDTH, *ga[0].dst, generator=gen)
            qmap = act_each(tmap, rel)
            qmap = qmap + torch.randn(qmap.shape, generator=gen) * tmap.std()
            pair = []
            for first in (False, True):
                ser.rho_first = first
                pair.append(float(ser._direction(tmap, qmap, rel)))
            out.append(tuple(pair))
    return out


def rho_first_effect() -> str:
    white, smooth = (
        sorted(abs(b - a) / abs(a) for a, b in rho_order_losses(smooth=s)) for s in (False, True)
    )
    return (
        f"L_equiv differs by {pct(white[0], white[-1])} on N(0, 1) token maps, "
        f"{pct(smooth[0], smooth[-1])} on smooth ones (4 draws of SER's grids, ViT-S width, "
        f"query = ρ_g(target) + noise); 0 when both views share a grid"
    )


def grid_draws(
    world: int = 2, steps: int = 100, shared: bool = False, base=BASE, n: int = 4, seed: int = 0
) -> int:
    """Steps (of ``steps``) on which the ranks' token grids or 90° rotations differ, drawn as
    ``PretrainBatches`` seeds them (per rank, or one draw per step with ``shared``)."""
    from harness.data.batches import derive_seed
    from harness.model.group import sample_public

    differ = 0
    for step in range(steps):
        seen = set()
        for rank in range(world):
            if shared:
                gen = torch.Generator().manual_seed(derive_seed(seed, "group", step))
                ga, gb = sample_public(gen, n * world, base)
                ga, gb = ga[rank * n : (rank + 1) * n], gb[rank * n : (rank + 1) * n]
            else:
                gen = torch.Generator().manual_seed(derive_seed(seed, "group", step, rank))
                ga, gb = sample_public(gen, n, base)
            seen.add((ga[0].dst, gb[0].dst, ga[0].d.k % 2, gb[0].d.k % 2))
        differ += len(seen) > 1
    return differ


def shared_grid_effect() -> str:
    own, shared = grid_draws(), grid_draws(shared=True)
    return (
        f"at W = 2 the ranks' grids or 90° rotations differ on {own} of 100 steps "
        f"({shared} with @shared_grid)"
    )


def ser_gradient_norms() -> tuple[float, float, float, int]:
    """‖∂(λ·L_equiv)/∂(blocks 1…k)‖ for ``moco_v3+ser`` and ``+ser_detached``, L_inv's on the
    same blocks, and k: micro, one real batch of noise images, the same weights."""
    from harness import config as C
    from harness.instruments.audit import random_batch
    from harness.schedule import Progress

    def norm(loss, params):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))

    out, batch = [], None
    for name in ("moco_v3+ser", "moco_v3+ser_detached"):
        cfg = C.resolve(name, "micro")
        torch.manual_seed(0)
        m = C.build_method(cfg).train()
        batch = batch or random_batch(m, cfg, 0)  # one batch: the two policies are the same
        terms = m.training_step(dict(batch), Progress(0, 10, 5))
        k = m.addons[0].layer
        params = [p for blk in m.backbone.blocks[:k] for p in blk.parameters()]
        eq = terms["loss_equiv"]
        out.append(norm(eq, params) if eq.requires_grad else 0.0)
        if len(out) == 1:
            inv = norm(terms["loss_inv"], params)
    return out[0], out[1], inv, k


def ser_gradient_effect() -> str:
    on, off, inv, k = ser_gradient_norms()
    return (
        f"‖∂(λ·L_equiv)/∂blocks 1–{k}‖ = {sci(on)} by default (L_inv's {sci(inv)}), "
        f"{sci(off)} with +ser_detached (micro moco_v3, one batch of noise images)"
    )
