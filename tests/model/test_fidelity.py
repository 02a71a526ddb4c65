"""The backbone computes what the public SER code computed (issue 13)."""

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from harness.model.backbone import Backbone, BackboneConfig

# The paper's grid (224 px, 16 px patches: 14×14) at a small width.
SMALL = dict(img_size=224, patch_size=16, width=32, depth=1, heads=2)
GRIDS = [(13, 15), (15, 13), (16, 16), (12, 16)]


def _public_interpolation(patch_pe: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """SER's interpolate_pos_encoding, transcribed: the table as 1×D×√N×√N, bicubic with
    scale_factor ((rows+0.1)/√N, (cols+0.1)/√N), align_corners left at its default."""
    n, d = patch_pe.shape[1:]
    side = int(math.sqrt(n))
    x = patch_pe.reshape(1, side, side, d).permute(0, 3, 1, 2)
    x = F.interpolate(
        x, scale_factor=((rows + 0.1) / math.sqrt(n), (cols + 0.1) / math.sqrt(n)), mode="bicubic"
    )
    assert x.shape[-2:] == (rows, cols)
    return x.permute(0, 2, 3, 1).reshape(1, -1, d)


def _cfg(**kw) -> BackboneConfig:
    return BackboneConfig(**{**SMALL, **kw})


def _backbone(**kw) -> Backbone:
    torch.manual_seed(0)
    b = Backbone(_cfg(**kw)).eval()
    with torch.no_grad():
        b.vit.pos_embed.normal_()  # fixed random weights, far from smooth
    return b


@pytest.mark.parametrize("layout", [{}, {"cls_layer": 3, "equiv_layer": 3}])
@pytest.mark.parametrize("grid", GRIDS)
def test_pos_embed_interpolation_is_the_public_formula(grid, layout):
    layout = {**layout, "depth": 3} if layout else layout
    b = _backbone(**layout)
    n_prefix = 0 if layout else 1
    pe = b.vit.pos_embed
    with torch.no_grad():
        got = b._pos(grid)
        want = _public_interpolation(pe[:, n_prefix:], *grid)
        timm = resample_abs_pos_embed(
            pe,
            list(grid),
            [14, 14],
            num_prefix_tokens=n_prefix,
            interpolation="bicubic",
            antialias=False,
        )
    assert got.shape == (1, n_prefix + grid[0] * grid[1], 32)
    assert torch.equal(got[:, :n_prefix], pe[:, :n_prefix])  # [CLS] slot unchanged
    assert torch.allclose(got[:, n_prefix:], want, rtol=0, atol=1e-6)
    # The old default (timm's resampling to the target size) is measurably different.
    assert (got - timm).norm() / timm.norm() > 1e-2
    # ... and stays reachable by name.
    b.cfg = _cfg(**layout, pos_interp="timm")
    with torch.no_grad():
        assert torch.equal(b._pos(grid), timm)


def test_pos_embed_on_the_base_grid_is_the_stored_one():
    for layout in ({}, {"cls_layer": 3, "equiv_layer": 3, "depth": 3}):
        b = _backbone(**layout)
        assert b._pos((14, 14)) is b.vit.pos_embed


def test_pos_embed_forward_on_other_grids_with_sincos():
    b = _backbone(moco_init=True, frozen_patch_embed=True, sincos_pos_embed=True)
    out = b(torch.randn(1, 3, 208, 240))
    assert out.grid == (13, 15) and out.cls.shape == (1, 32)


def test_frozen_patch_projection_keeps_conv2d_default_init():
    torch.manual_seed(0)
    b = Backbone(_cfg(width=384, moco_init=True, frozen_patch_embed=True))
    proj = b.vit.patch_embed.proj
    bound = 1 / math.sqrt(3 * 16 * 16)  # ≈ 0.036, half the MoCo-v3 repository's 0.072
    w, bias = proj.weight.detach(), proj.bias.detach()
    assert not proj.weight.requires_grad and not proj.bias.requires_grad
    assert w.abs().max() <= bound and bias.abs().max() <= bound
    assert bias.abs().min() > 0  # random, not zero
    assert abs(float(w.std()) / (bound / math.sqrt(3)) - 1) < 0.05


def test_moco_v3_repository_init_stays_reachable():
    torch.manual_seed(0)
    b = Backbone(
        _cfg(width=384, moco_init=True, frozen_patch_embed=True, patch_embed_init="moco_v3")
    )
    proj = b.vit.patch_embed.proj
    bound = math.sqrt(6 / (3 * 16 * 16 + 384))
    assert float(proj.weight.abs().max()) > 1 / math.sqrt(768)
    assert float(proj.weight.abs().max()) <= bound and float(proj.bias.abs().max()) == 0.0
    assert not proj.weight.requires_grad
