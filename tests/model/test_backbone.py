"""Backbone layouts: SER's delayed [CLS] and norm_equiv, the standard ViT, MoCo-v3 options."""

import torch

from harness.model.backbone import Backbone, BackboneConfig

MICRO = dict(img_size=16, patch_size=4, width=32, depth=12, heads=2)


def test_ser_layout_positional_embedding_and_cls_insertion():
    b = Backbone(BackboneConfig(**MICRO, cls_layer=3, equiv_layer=3)).eval()
    assert b.vit.pos_embed.shape[1] == 16  # patches only, no [CLS] slot
    seen = []
    for i, blk in enumerate(b.blocks):
        blk.register_forward_hook(lambda m, inp, out, i=i: seen.append(out.shape[1]))
    out = b(torch.randn(2, 3, 16, 16), taps={3})
    assert seen == [16] * 3 + [17] * 9  # [CLS] joins after block 3
    assert out.tokens[3].shape == (2, 32, 4, 4)
    assert out.cls.shape == (2, 32)


def test_cls_is_not_position_embedded_and_tap_is_norm_equiv():
    b = Backbone(BackboneConfig(**MICRO, cls_layer=3, equiv_layer=3)).eval()
    x = torch.randn(1, 3, 16, 16)
    captured = {}
    b.blocks[3].register_forward_pre_hook(lambda m, a: captured.setdefault("in", a[0]))
    b.blocks[2].register_forward_hook(lambda m, a, o: captured.setdefault("l3", o))
    out = b(x, taps={3})
    assert torch.equal(captured["in"][:, 0], b.vit.cls_token[:, 0])  # raw [CLS], no pos-embed
    ref = b.norm_equiv(captured["l3"]).transpose(1, 2).reshape(1, 32, 4, 4)
    assert torch.allclose(out.tokens[3], ref)
    # The un-normalised tokens continue into block 4.
    assert torch.equal(captured["in"][:, 1:], captured["l3"])


def test_standard_layout_and_last_n_features():
    b = Backbone(BackboneConfig(**MICRO)).eval()
    assert b.vit.pos_embed.shape[1] == 17 and b.norm_equiv is None
    x = torch.randn(3, 3, 16, 16)
    f = b.features(x, n_last=4)
    assert f.shape == (3, 4 * 32)
    assert torch.allclose(f[:, -32:], b(x).cls)  # last chunk = final-LayerNorm [CLS]


def test_any_token_grid_interpolates_pos_embed():
    for layout in ({}, {"cls_layer": 3, "equiv_layer": 3}):
        b = Backbone(BackboneConfig(**MICRO, **layout)).eval()
        out = b(torch.randn(2, 3, 20, 12), taps={3} if layout else ())
        assert out.grid == (5, 3) and out.cls.shape == (2, 32)


def test_moco_options_freeze_patch_embedding():
    b = Backbone(
        BackboneConfig(**MICRO, moco_init=True, frozen_patch_embed=True, sincos_pos_embed=True)
    )
    assert not b.vit.patch_embed.proj.weight.requires_grad
    assert not b.vit.pos_embed.requires_grad
    assert float(b.vit.pos_embed[0, 0].abs().sum()) == 0.0  # zero [CLS] slot
    assert b.cfg.heads == 2 and BackboneConfig().heads == 6
