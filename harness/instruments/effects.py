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


def _pct(lo: float, hi: float) -> str:
    a, b = f"{100 * lo:.2g}", f"{100 * hi:.2g}"
    return f"{a} %" if a == b else f"{a}–{b} %"


def _sci(x: float) -> str:
    return f"{x:.2g}" if 1e-2 <= abs(x) < 1e3 or x == 0 else f"{x:.1e}"


def _g(x: float) -> str:
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
        f"timm's table differs from the public one by {_pct(few[0], few[-1])} (relative L2, "
        f"N(0, 1) table) at {grids}, {_pct(rand[0], rand[-1])} over the {len(every)} grids "
        f"SER's scale views draw; {_pct(sc[0], sc[-1])} there on MoCo-v3's sin-cos table"
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
        f"MoCo-v3's weights are {ws / ps:.2f}× as wide (std {_sci(ws)} vs {_sci(ps)}), bias "
        f"{_sci(mbias)} vs up to ±{_sci(pbias)}; patch tokens of N(0, 1) images {ratio:.2f}× "
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
        f"L_equiv differs by {_pct(white[0], white[-1])} on N(0, 1) token maps, "
        f"{_pct(smooth[0], smooth[-1])} on smooth ones (4 draws of SER's grids, ViT-S width, "
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
        f"‖∂(λ·L_equiv)/∂blocks 1–{k}‖ = {_sci(on)} by default (L_inv's {_sci(inv)}), "
        f"{_sci(off)} with +ser_detached (micro moco_v3, one batch of noise images)"
    )


# ---- base methods' recipes -----------------------------------------------------------------


def barlow_grad_ratio(world: int = 2) -> float:
    """The public gradient over the exact one, emulated in one process: rank r's loss sees the
    whole cross-correlation C but back-propagates only its own rows' share C_r (the in-place
    all_reduce), the synchronised BatchNorm keeps its full gradient, and the ranks' gradients
    are averaged (DDP). The exact gradient is the harness's ``barlow_twins`` in one process."""
    from methods.losses import _bn_no_affine, barlow_twins

    gen = torch.Generator().manual_seed(0)
    b, lambd = 8, 0.0051
    x1 = torch.randn(b, 6, generator=gen, dtype=torch.float64)
    x2 = x1 + 0.5 * torch.randn(b, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64).requires_grad_()
    (exact,) = torch.autograd.grad(barlow_twins(x1 @ w, x2 @ w, lambd), w)
    z1, z2 = _bn_no_affine(x1 @ w), _bn_no_affine(x2 @ w)
    full = z1.t() @ z2 / b
    total = 0.0
    for r in range(world):
        rows = slice(r * b // world, (r + 1) * b // world)
        own = z1[rows].t() @ z2[rows] / b
        c = own + (full - own).detach()
        diag = torch.diagonal(c)
        total = total + (1 - diag).pow(2).sum() + lambd * (c.pow(2).sum() - diag.pow(2).sum())
    (public,) = torch.autograd.grad(total / world, w)
    return float((public * exact).sum() / (exact * exact).sum())


def barlow_grad_scale_effect() -> str:
    return (
        f"the public gradient is {barlow_grad_ratio():.3f}× the exact one at W = 2 (one-process "
        f"emulation; tests/methods/test_fidelity_recipes.py measures the switch on 2 processes)"
    )


def dino_recipe_effect() -> str:
    from harness import config as C
    from harness.schedule import Progress
    from methods.losses import dino_loss

    temps, losses, floors = [], [], []
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(8, 256, generator=gen, dtype=torch.float64) for _ in range(4)]
    teacher = [torch.randn(8, 256, generator=gen, dtype=torch.float64) for _ in range(2)]
    for over in ([], ["recipe.teacher_temp=0.04", "recipe.min_lr=1e-6"]):
        m = C.build_method(C.resolve("dino", "micro", overrides=over))
        t = m.teacher_temp(Progress(100, 200, 5))  # epoch 20, past the warm-up
        temps.append(t)
        floors.append(m.recipe["min_lr"])
        losses.append(float(dino_loss(student, teacher, torch.zeros(256), 0.1, t)))
    rel = abs(losses[1] - losses[0]) / losses[0]
    return (
        f"from epoch 10 the teacher temperature is {_g(temps[0])} vs {_g(temps[1])}: the DINO "
        f"loss on fixed N(0, 1) logits differs by {_pct(rel, rel)}; min_lr "
        f"{floors[0]:g} vs {floors[1]:g}"
    )


def barlow_recipe_effect() -> str:
    from harness import config as C
    from harness.schedule import Progress

    clipped, decay = [], []
    for over in ([], ["recipe.bias_group=true", "recipe.weight_decay=1e-6",
                      "recipe.clip_per_tensor=false"]):  # fmt: skip
        torch.manual_seed(0)
        m = C.build_method(C.resolve("barlow_twins", "micro", overrides=over))
        gen = torch.Generator().manual_seed(1)
        params = [p for p in m.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        m.clip_gradients(Progress(0, 10, 5))
        decay.append(m.recipe["weight_decay"])
        clipped.append(torch.cat([p.grad.flatten() for p in params]))
    a, b = clipped
    rel = float((a - b).norm() / a.norm())
    return (
        f"clipping each tensor at 0.3 differs by {_pct(rel, rel)} from clipping the global "
        f"norm (relative L2, N(0, 1) gradients at micro); weight decay {decay[0]:g} vs {decay[1]:g}"
    )


# ---- add-ons and views ---------------------------------------------------------------------


def augself_pairs(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs of view parameters from a 224-px global pipeline, seed 0."""
    from harness.data.augment import Pipeline

    pipe = Pipeline(224, (0.2, 1.0))
    img = torch.empty(3, 256, 320)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pa = torch.stack([pipe.sample(img) for _ in range(n)])
        pb = torch.stack([pipe.sample(img) for _ in range(n)])
    return pa.double(), pb.double()


def augself_targets_effect() -> str:
    from methods.augself import crop_target

    pa, pb = augself_pairs()
    d = [crop_target(x, y) - crop_target(x, y, original=True) for x, y in ((pa, pb), (pb, pa))]
    differ = int(((d[0].abs() > 1e-12) | (d[1].abs() > 1e-12)).any(1).sum())
    mean = float(torch.cat(d)[:, 1].abs().sum() / max(1, 2 * differ))
    return (
        f"the crop targets differ on {differ} of {len(pa)} pairs (one view flipped), their x "
        f"entry by {_g(mean)} on average there"
    )


def photometric_images(n: int = 4, size: int = 112) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random uint8 images and view 1's parameters (jitter p 0.8, grayscale 0.2, blur
    p 1), drawn once (seed 0)."""
    from harness.data.augment import Pipeline

    gen = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 8, 8, generator=gen)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")
    img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    pipe = Pipeline(size, (0.2, 1.0), blur_p=1.0, flavour="kornia")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        params = torch.stack([pipe.sample(img[0]) for _ in range(n)])
    return img, params


def photometric_difference() -> float:
    """‖torchvision − kornia‖ / ‖kornia‖ of the same crops rendered with the same drawn
    parameters, each flavour with its own ops and blur kernel (normalised pixels)."""
    from harness.data.augment import blur_kernel
    from harness.data.photometric import render

    img, params = photometric_images()
    size = img.shape[-1]
    out = [
        render(img, params, blur_kernel(size, fl)[0], flavour=fl)
        for fl in ("kornia", "torchvision")
    ]
    return float((out[1] - out[0]).norm() / out[0].norm())


def kornia_photometric_effect() -> str:
    rel = photometric_difference()
    return (
        f"the same crops and drawn factors render {_pct(rel, rel)} apart (relative L2, 4 smooth "
        f"random 112-px images, view 1's jitter, grayscale and blur)"
    )


def _erl_local4_pair(a: torch.Tensor, b: torch.Tensor, bs: int, tau: float) -> torch.Tensor:
    """One pair term of the public ``erl_local4`` (builder/moco.py), from its formula: ``bs``
    counts images (set before the maps are flattened to tokens), so the positives are the
    first ``bs`` diagonal entries of the cross block, the same-image masks sit at offsets of
    ``bs`` rows and the normaliser is 2·bs."""
    per = len(a) // bs
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    s = z @ z.t() / tau
    num = 2.0 * torch.trace(s[:bs, bs:])
    mask = torch.ones_like(s)
    for r0, c0 in ((0, 0), (0, bs), (bs, 0), (bs, bs)):
        for i in range(bs):
            mask[r0 + i * per : r0 + (i + 1) * per, c0 + i * per : c0 + (i + 1) * per] = 0
    mask[:bs, bs:].fill_diagonal_(1)
    mask[bs:, :bs].fill_diagonal_(1)
    return (torch.log((s.exp() * mask).sum(0)).sum() - num) / (2 * bs)


def ser_2plus4_losses() -> tuple[tuple[float, float], tuple[float, float]]:
    """(aligned, shuffled) query maps against one target map: the public ``erl_local4`` pair
    term and the harness's token InfoNCE direction, 4 images of 4×4 ViT-S-wide N(0, 1) tokens,
    projector 384 → 512 → 512, τ 0.2, float64."""
    from harness.model.group import Element
    from methods.heads import TokenProjector
    from methods.ser import SER

    torch.manual_seed(0)
    ser = SER("moco_v3", tau=0.2)
    # float64: the two public values agree to 5 digits, which float32 would blur.
    ser.projector = TokenProjector(WIDTH, 512, 512).double()
    g = torch.Generator().manual_seed(7)
    tmap = torch.randn(4, WIDTH, 4, 4, generator=g, dtype=torch.float64)
    shuffled = tmap.flatten(2)[:, :, torch.randperm(16, generator=g)].view_as(tmap)
    ident = [Element.identity((4, 4))] * 4

    def tokens(x):
        return ser.projector(x).permute(0, 2, 3, 1).reshape(-1, 512)

    with torch.no_grad():
        t = tokens(tmap)
        public = tuple(float(_erl_local4_pair(t, tokens(q), 4, 0.2)) for q in (tmap, shuffled))
        ours = tuple(float(ser._direction(tmap, q, ident)) for q in (tmap, shuffled))
    return public, ours


def ser_2plus4_effect() -> str:
    (pa, ps), (ha, hs) = ser_2plus4_losses()
    return (
        f"the public erl_local4 gives {pa:.6g} on aligned and {ps:.6g} on shuffled token maps "
        f"(gap {_sci(abs(ps - pa) / pa)} relative); the harness's loss {ha:.3g} vs {hs:.3g}"
    )
