"""The measured size of the base methods' recipe departures and of the add-ons' and views'
(``methods/departures.py``, field ``measure``), as ``harness.instruments.effects`` measures the
backbone's and SER's: no argument, fixed seeded tensors on CPU, one line returned."""

from __future__ import annotations

import torch

from harness.instruments.effects import WIDTH, fmt3, pct, sci

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
        f"from epoch 10 the teacher temperature is {fmt3(temps[0])} vs {fmt3(temps[1])}: the DINO "
        f"loss on fixed N(0, 1) logits differs by {pct(rel, rel)}; min_lr "
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
        f"clipping each tensor at 0.3 differs by {pct(rel, rel)} from clipping the global "
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
        f"entry by {fmt3(mean)} on average there"
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
        f"the same crops and drawn factors render {pct(rel, rel)} apart (relative L2, 4 smooth "
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
        f"(gap {sci(abs(ps - pa) / pa)} relative); the harness's loss {ha:.3g} vs {hs:.3g}"
    )
