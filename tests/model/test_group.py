"""The group algebra: exact permutations, exact compose/inverse, ρ_g a homomorphism."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from harness.model.group import D4, Element, act_each, relative, sample_independent, sample_public

D4_ALL = [D4(f, k) for f in (0, 1) for k in range(4)]


def patch_mean(x, p):
    return F.avg_pool2d(x, p)


def test_d4_is_a_group_with_exact_inverse_and_compose():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    for a, b in itertools.product(D4_ALL, D4_ALL):
        assert torch.equal((a * b).apply(x), a.apply(b.apply(x)))
    for a in D4_ALL:
        assert torch.equal(a.inverse().apply(a.apply(x)), x)
        assert a * a.inverse() == D4()
    # Eight distinct elements: the action is faithful.
    assert len({tuple(a.apply(x).flatten().tolist()) for a in D4_ALL}) == 8


def test_d4_action_is_a_permutation_on_images_and_grids():
    for shape in [(1, 3, 32, 32), (2, 8, 5, 5)]:
        x = torch.randperm(torch.Size(shape).numel()).reshape(shape).float()
        for a in D4_ALL:
            y = a.apply(x)
            assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())


@pytest.mark.parametrize("p", [4, 16])
def test_patch_average_is_exactly_equivariant(p):
    g = 3
    # Integer pixels and p² a power of two: every patch mean is exact, whatever the summation
    # order, so equality is bitwise.
    x = torch.randint(0, 256, (2, 3, g * p, g * p)).double()
    for d in D4_ALL:
        el = Element(d, (g, g), (g, g))
        assert torch.equal(el.act(patch_mean(x, p)), patch_mean(el.act(x, unit=p), p))


def test_element_compose_inverse_and_relative():
    a = Element(D4(1, 1), (4, 4), (3, 5))
    b = Element(D4(0, 3), (3, 5), (6, 2))
    ab = b.compose(a)
    assert ab.src == (4, 4) and ab.dst == (6, 2) and ab.d == D4(0, 3) * D4(1, 1)
    assert a.inverse().compose(a) == Element.identity((4, 4))
    assert a.compose(a.inverse()) == Element.identity((3, 5))
    with pytest.raises(ValueError):
        a.compose(a)
    # ρ(g2 g1⁻¹) ρ(g1) = ρ(g2) on permutation elements.
    g1 = [Element(d, (4, 4), (4, 4)) for d in D4_ALL]
    g2 = [Element(d, (4, 4), (4, 4)) for d in reversed(D4_ALL)]
    x = torch.randn(8, 2, 4, 4)
    assert torch.equal(act_each(act_each(x, g1), relative(g1, g2)), act_each(x, g2))


def test_rescale_elements_agree_within_tolerance():
    """Rescaling is interpolation: ρ_g(f(x)) ≈ f(g·x) only approximately.

    On a smooth image the relative error stays below 5%; it is never claimed exact.
    """
    p, g = 4, 8
    yy, xx = torch.meshgrid(torch.linspace(0, 1, g * p), torch.linspace(0, 1, g * p), indexing="ij")
    x = torch.stack([torch.sin(3 * xx) + yy, torch.cos(2 * yy) * xx, xx * yy])[None].double()
    el = Element(D4(1, 1), (g, g), (7, 10))
    lhs, rhs = el.act(patch_mean(x, p)), patch_mean(el.act(x, unit=p), p)
    assert lhs.shape == rhs.shape == (1, 3, 7, 10)
    assert (lhs - rhs).norm() / rhs.norm() < 0.05


def test_public_policy_relative_element_is_flip_and_rot180():
    """d_v = R^(k_v+2r_v) F^(f_v) with view 2 taking (¬f, ¬r), so d2·d1⁻¹ = R^(k1+k2+2) F:
    one flip, the same for every sample of the batch, whatever each sample drew."""
    gen = torch.Generator().manual_seed(0)
    g1, g2 = sample_public(gen, 32, (14, 14))
    assert len({g.dst for g in g1}) == 1 and len({g.dst for g in g2}) == 1
    rel = {(b.d * a.d.inverse()) for a, b in zip(g1, g2)}
    assert len(rel) == 1 and next(iter(rel)).flip == 1
    assert len({a.d for a in g1}) > 1  # per-sample flips / rot180s do vary
    areas = [g.dst[0] * g.dst[1] for g in g1 + g2]
    assert all(0.6 * 196 <= a <= 1.4 * 196 for a in areas)


def test_independent_policy_stacks():
    gen = torch.Generator().manual_seed(1)
    g1, g2 = sample_independent(gen, 5, (4, 4))
    x = torch.randn(5, 3, 16, 16)
    assert act_each(x, g1, unit=4).shape[-2:] == tuple(d * 4 for d in g1[0].dst)
