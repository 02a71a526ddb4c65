"""DINO's and Barlow Twins' recipes compute what the public SER code computed (issue 13):
DINO's teacher-temperature schedule and min_lr (main_dino.py), Barlow Twins' single AdamW
group and per-tensor clipping (main_barlowtwins.py), and the switch to its 1/W gradient.
"""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness import config as C
from harness.parallel import dist as hdist
from harness.schedule import Progress
from methods import barlow_twins as bt_module
from methods.barlow_twins import BarlowTwins
from methods.dino import DINO
from methods.losses import barlow_twins
from tests.helpers import free_port

ITS = 7  # iterations per epoch


def _temps(recipe: dict, epochs: int = 100) -> list[float]:
    """The teacher temperature at every iteration of ``epochs`` epochs, one list per epoch."""
    stub = SimpleNamespace(recipe=recipe)
    total = epochs * ITS
    return [
        [DINO.teacher_temp(stub, Progress(e * ITS + i, total, ITS)) for i in range(ITS)]
        for e in range(epochs)
    ]


def test_dino_teacher_temperature_is_dinos_linspace_per_epoch():
    recipe = C.resolve("dino", "paper")["recipe"]
    want = np.concatenate((np.linspace(0.04, 0.07, 10), np.ones(100 - 10) * 0.07))
    for e, per_iter in enumerate(_temps(recipe)):
        assert per_iter == [want[e]] * ITS, e  # exact, and constant within an epoch
    # linspace includes both ends: epoch 9 already has the target (the old formula gave 0.067).
    assert _temps(recipe, 10)[9][0] == 0.07
    # The switch named in departures restores the old constant 0.04.
    old = {**recipe, "teacher_temp": 0.04}
    assert {t for per_iter in _temps(old) for t in per_iter} == {0.04}


def test_dino_recipe_defaults_are_main_dinos():
    r = DINO.recipe
    assert (r["warmup_teacher_temp"], r["teacher_temp"], r["warmup_teacher_temp_epochs"]) == (
        0.04,
        0.07,
        10,
    )
    assert r["min_lr"] == 1e-5
    assert C.resolve("dino", "paper")["recipe"]["min_lr"] == 1e-5
    assert DINO.version >= 2


def _bt(*overrides):
    cfg = C.resolve("barlow_twins", "micro", overrides=list(overrides))
    torch.manual_seed(0)
    return C.build_method(cfg)


def test_barlow_twins_one_adamw_group_with_decay_0_1():
    assert BarlowTwins.recipe["weight_decay"] == 0.1 and BarlowTwins.version >= 2
    m = _bt()
    groups = m.param_groups()
    assert len(groups) == 1
    (g,) = groups
    assert g["weight_decay"] == 0.1 and g["lr_scale"] == 1.0
    assert {id(p) for p in g["params"]} == {id(p) for p in m.trainable_parameters()}
    assert len(g["params"]) == len(m.trainable_parameters())
    assert any(p.ndim == 1 for p in g["params"])  # biases and norms decay too
    # The earlier recipe stays reachable: a bias group at bias_lr, without decay.
    old = _bt("recipe.bias_group=true", "recipe.weight_decay=1e-6").param_groups()
    assert [g["weight_decay"] for g in old] == [1e-6, 0.0]
    assert all(p.ndim == 1 for p in old[1]["params"])


def _fixed_grads(m) -> dict:
    """Gradients of very different norms: some far above 0.3, some below."""
    gen = torch.Generator().manual_seed(1)
    grads = {}
    for i, (n, p) in enumerate(m.named_parameters()):
        if p.requires_grad:
            scale = [1e-4, 0.01, 0.1, 1.0, 10.0][i % 5]
            p.grad = torch.randn(p.shape, generator=gen) * scale
            grads[n] = p.grad.clone()
    return grads


def test_barlow_twins_clips_each_tensor_on_its_own():
    m = _bt()
    assert m.recipe["clip"] == 0.3
    grads = _fixed_grads(m)
    m.clip_gradients(Progress(0, 10, 5))
    clipped = unclipped = 0
    for n, p in m.named_parameters():
        if n in grads:
            g = grads[n]
            coef = 0.3 / (g.norm(2) + 1e-6)
            want = g * coef if coef < 1 else g
            assert torch.allclose(p.grad, want, rtol=1e-6, atol=0), n
            clipped += bool(coef < 1)
            unclipped += bool(coef >= 1)
    assert clipped and unclipped  # both branches were exercised
    # The earlier global-norm clipping is reachable, and is not what the default does.
    m = _bt("recipe.clip_per_tensor=false")
    grads = _fixed_grads(m)
    m.clip_gradients(Progress(0, 10, 5))
    total = torch.cat([g.flatten() for g in grads.values()]).norm()
    for n, p in m.named_parameters():
        if n in grads:
            assert torch.allclose(p.grad, grads[n] * 0.3 / (total + 1e-6), rtol=1e-5), n


def test_barlow_twins_passes_its_gradient_switch_to_the_loss(monkeypatch):
    seen = []

    def spy(z1, z2, lambd, public_grad_scale=False):
        seen.append(public_grad_scale)
        return barlow_twins(z1, z2, lambd, public_grad_scale)

    monkeypatch.setattr(bt_module, "barlow_twins", spy)
    z = [torch.randn(6, 3)]
    for flag, want in ((None, False), ("true", True)):
        m = _bt(*([f"recipe.public_grad_scale={flag}"] if flag else []))
        m.projector = torch.nn.Identity()
        seen.clear()
        m.invariance_loss([SimpleNamespace(cls=z[0]), SimpleNamespace(cls=z[0] + 1)], None, None)
        assert seen == [want]


# ---- the 1/W gradient at W = 2 ------------------------------------------------------------
WORLD, B, D_IN, D_OUT, LAMBD = 2, 8, 6, 5, 0.0051


def _inputs():
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(B, D_IN, generator=gen, dtype=torch.float64)
    x2 = x1 + 0.5 * torch.randn(B, D_IN, generator=gen, dtype=torch.float64)
    w = torch.randn(D_IN, D_OUT, generator=gen, dtype=torch.float64)
    return x1, x2, w


def _grad(x1, x2, w, public_grad_scale: bool):
    """The loss through a linear layer, and the layer's gradient after the harness's
    gradient average across ranks (what DDP does)."""
    w = w.clone().requires_grad_()
    loss = barlow_twins(x1 @ w, x2 @ w, LAMBD, public_grad_scale)
    loss.backward()
    hdist.average_gradients([w])
    return loss.detach(), w.grad


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    x1, x2, w = _inputs()
    rows = slice(rank * B // world, (rank + 1) * B // world)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res = {flag: _grad(x1[rows], x2[rows], w, flag) for flag in (False, True)}
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_barlow_twins_public_grad_scale_is_half_the_exact_gradient_at_w2(tmp_path):
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    two = torch.load(out, weights_only=False)
    one_loss, one_grad = _grad(*_inputs(), public_grad_scale=False)
    assert torch.allclose(_grad(*_inputs(), public_grad_scale=True)[1], one_grad, rtol=1e-12)
    for flag, factor in ((False, 1.0), (True, 1 / WORLD)):
        loss, grad = two[flag]
        assert loss == pytest.approx(float(one_loss), rel=1e-12), flag  # same value either way
        assert torch.allclose(grad, one_grad * factor, rtol=1e-10, atol=1e-14), (
            flag,
            float((grad / one_grad).mean()),
        )
