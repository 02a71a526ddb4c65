"""Registry, per-method CPU steps, the gradient audit, parameter and FLOP counts."""

import copy

import pytest
import torch

from harness import config as C
from harness.errors import HarnessError
from harness.instruments.audit import audit, random_batch
from harness.instruments.flops import params_millions, step_flops
from harness.schedule import Progress
from methods.registry import parse

ROWS = ["moco_v3", "moco_v3+ser", "dino", "dino+ser", "barlow_twins", "barlow_twins+ser"]


@pytest.mark.parametrize("name", ROWS)
def test_one_step_trains_every_online_parameter(name):
    cfg = C.resolve(name, "micro")
    torch.manual_seed(0)
    m = C.build_method(cfg).train()
    terms = m.training_step(random_batch(m, cfg), Progress(0, 10, 5))
    assert set(terms) == ({"loss_inv", "loss_equiv"} if "+ser" in name else {"loss_inv"})
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    # DINO's prototype layer is trained; the rest of every online network must get gradient.
    assert not no_grad, no_grad


def test_registry_parses_options_and_rejects_unknown_names():
    base, addons = parse("moco_v3+ser@layer9@code")
    assert base.name == "moco_v3" and addons[0][1] == {"layer": 9, "hyper": "code"}
    cfg = C.resolve("moco_v3+ser@layer9@code", "micro")
    m = C.build_method(cfg)
    ser = m.addons[0]
    assert (ser.layer, ser.cls_layer, ser.tau, ser.lam) == (9, 9, 0.5, 1.0)
    assert m.backbone.cfg.cls_layer == 9 and m.backbone.cfg.equiv_layer == 9
    paper = C.build_method(C.resolve("dino+ser", "micro")).addons[0]
    assert (paper.tau, paper.lam) == (0.5, 0.3)
    with pytest.raises(HarnessError) as e:
        parse("moco_v4")
    assert "moco_v3" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(HarnessError):
        parse("moco_v3+ser@bogus")


def _check_ser_audit(r, k=3, depth=12):
    eq, inv = r["terms"]["loss_equiv"], r["terms"]["loss_inv"]
    assert set(eq) == set(inv)
    for i in range(k):
        assert eq[f"blocks.{i}"] > 0
    for i in range(k, depth):
        assert eq[f"blocks.{i}"] == 0.0
    assert eq["norm_equiv"] > 0 and eq["ser.projector"] > 0
    assert eq["cls_token"] == 0.0 and eq["norm"] == 0.0
    heads = [
        g
        for g in eq
        if g not in ("patch_embed", "pos_embed", "cls_token", "norm", "norm_equiv", "ser.projector")
        and not g.startswith("blocks.")
    ]
    assert heads, "the invariance heads must be listed"
    for h in heads:
        assert eq[h] == 0.0 and inv[h] > 0
    assert inv["ser.projector"] == 0.0 and inv["blocks.11"] > 0


@pytest.mark.parametrize("name", ["moco_v3+ser", "dino+ser", "barlow_twins+ser"])
def test_audit_equivariance_gradient_stops_at_layer_k(name):
    _check_ser_audit(audit(name, "tiny"))


def test_audit_follows_the_layer_option():
    _check_ser_audit(audit("moco_v3+ser@layer5", "micro"), k=5)


def test_params_match_table1():
    assert abs(params_millions("moco_v3", "paper") - 42.9) <= 0.1
    assert abs(params_millions("moco_v3+ser", "paper") - 43.4) <= 0.1


def test_ser_flops_overhead_at_paper_scale():
    base = step_flops("moco_v3", "paper", 256)
    ser = step_flops("moco_v3+ser", "paper", 256)
    assert 0.95 < ser / base <= 1.02


def test_moco_momentum_schedule_and_ema():
    cfg = C.resolve("moco_v3", "micro")
    m = C.build_method(cfg)
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    before = copy.deepcopy(m.momentum_backbone.state_dict())
    m.before_step(Progress(0, 10, 5))  # m = 0.99 at the start
    for k, v in m.momentum_backbone.state_dict().items():
        online = m.backbone.state_dict()[k]
        if m.backbone.state_dict()[k].dtype.is_floating_point:
            assert torch.allclose(v, 0.99 * before[k] + 0.01 * online, atol=1e-6)
    m.before_step(Progress(10, 10, 5))  # m = 1 at the end: nothing moves
    snap = copy.deepcopy(m.momentum_backbone.state_dict())
    m.before_step(Progress(10, 10, 5))
    assert all(torch.equal(v, snap[k]) for k, v in m.momentum_backbone.state_dict().items())


def test_dino_center_temperature_and_per_tensor_clip():
    cfg = C.resolve("dino", "micro")
    cfg["recipe"].update(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    m = C.build_method(cfg).train()
    assert m.teacher_temp(Progress(0, 50, 10)) == pytest.approx(0.04)
    assert m.teacher_temp(Progress(15, 50, 10)) == pytest.approx(0.055)  # linspace, epoch 1
    assert m.teacher_temp(Progress(40, 50, 10)) == pytest.approx(0.07)
    assert m.teacher_backbone.cfg.drop_path == 0.0 and m.backbone.cfg.drop_path > 0
    batch = random_batch(m, cfg)
    terms = m.training_step(batch, Progress(12, 50, 10))
    with torch.no_grad():
        t = [m.teacher_head(m.encode(m.teacher_backbone, c, set()).cls) for c in batch["views"]]
    expected = 0.9 * m.center + 0.1 * torch.cat(t).mean(0, keepdim=True)
    terms["loss_inv"].backward()
    for p in m.trainable_parameters():
        if p.grad is not None:
            p.grad.mul_(1e3)
    m.clip_gradients(Progress(12, 50, 10))
    for p in m.trainable_parameters():
        if p.grad is not None:
            assert float(p.grad.norm()) <= m.recipe["clip"] * (1 + 1e-5)
    m.after_step(Progress(12, 50, 10))
    assert torch.allclose(m.center, expected, atol=1e-6)
    # In epoch 0 the prototype layer gets no gradient.
    m.zero_grad()
    m.training_step(batch, Progress(0, 50, 10))["loss_inv"].backward()
    m.clip_gradients(Progress(0, 50, 10))
    assert all(p.grad is None for p in m.head.last_layer.parameters())


def test_view_policy_errors_name_the_fix():
    cfg = C.resolve("moco_v3+ser@r0.01", "micro")
    m = C.build_method(cfg)
    with pytest.raises(HarnessError) as e:
        random_batch(m, cfg)
    assert "@r" in str(e.value) and "\n" not in str(e.value)


def test_public_code_ablations_train_nothing_through_l_equiv():
    r = audit("moco_v3+ser_detached", "micro")
    assert all(v == 0.0 for v in r["terms"]["loss_equiv"].values())
    assert r["terms"]["loss_inv"]["blocks.0"] > 0
    r = audit("dino+delayed_cls", "micro")
    assert set(r["terms"]) == {"loss_inv"}
    m = C.build_method(C.resolve("dino+delayed_cls", "micro"))
    assert m.backbone.cfg.cls_layer == 3
    # Same forward as +ser: the detached loss has the value +ser's has, on the same batch.
    vals = []
    for name in ("moco_v3+ser", "moco_v3+ser_detached"):
        cfg = C.resolve(name, "micro")
        torch.manual_seed(0)
        m = C.build_method(cfg).train()
        vals.append(m.training_step(random_batch(m, cfg), Progress(0, 1, 1))["loss_equiv"].item())
    assert vals[0] == pytest.approx(vals[1], rel=1e-6)
