"""ViT backbone on top of timm's VisionTransformer, in the standard or the SER layout.

timm owns the blocks, patch embedding and initialisations; this module owns only the
token flow, because SER needs what timm's forward cannot give: a [CLS] inserted after block
``cls_layer`` without positional embedding, and token maps tapped after any block.
Block indices are 1-based like the paper ("layer 3" = output of ``blocks.2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from harness.errors import HarnessError

POS_INTERP = ("public", "timm")
PATCH_EMBED_INIT = ("public", "moco_v3")


@dataclass(frozen=True)
class BackboneConfig:
    img_size: int = 224
    patch_size: int = 16
    width: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    # SER layout: [CLS] inserted after block ``cls_layer`` (None = standard ViT layout).
    cls_layer: int | None = None
    # Layers whose token map gets its own LayerNorm (SER's ``norm_equiv``).
    equiv_layer: int | None = None
    # MoCo-v3 options.
    moco_init: bool = False
    frozen_patch_embed: bool = False
    sincos_pos_embed: bool = False
    # Positional embedding off the base grid: "public" is SER's (DINO's) interpolate_pos_encoding,
    # "timm" is timm's resample_abs_pos_embed to the target size.
    pos_interp: str = "public"
    # The frozen patch projection's init: "public" keeps Conv2d's default (SER's xavier block is
    # commented out), "moco_v3" is MoCo-v3's own uniform ±√(6/(3·p²+D)) with zero bias.
    patch_embed_init: str = "public"


@dataclass
class BackboneOutput:
    cls: torch.Tensor  # B×D, final LayerNorm'd [CLS]
    tokens: dict = field(default_factory=dict)  # layer -> B×D×h×w (norm_equiv'd at equiv_layer)
    grid: tuple = (0, 0)


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo-v3's fixed 2-D sin-cos embedding: quarters sin(w), cos(w), sin(h), cos(h)."""
    h, w = grid
    gh, gw = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    q = dim // 4
    omega = 1.0 / temperature ** (torch.arange(q, dtype=torch.float32) / q)
    ow = gw.flatten()[:, None] * omega[None]
    oh = gh.flatten()[:, None] * omega[None]
    return torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], dim=1)[None]


def interpolate_pos_public(
    pe: torch.Tensor, grid: tuple[int, int], base_grid: tuple[int, int]
) -> torch.Tensor:
    """SER's (= DINO's) ``interpolate_pos_encoding`` on the patch part ``pe`` (1×N×D) of a table
    stored for ``base_grid``: bicubic with the scale factors ((h+0.1)/h_base, (w+0.1)/w_base)
    themselves, not the target size (F.interpolate then maps coordinates by those factors).

    Rows (the image's height axis) get the rows' factor: the public code's ``w`` is
    ``x.shape[2]``, so its ``w0`` counts patch rows and scales the first spatial axis.
    """
    (h, w), (bh, bw) = tuple(grid), tuple(base_grid)
    d = pe.shape[-1]
    table = pe.reshape(1, bh, bw, d).permute(0, 3, 1, 2)
    out = F.interpolate(table, scale_factor=((h + 0.1) / bh, (w + 0.1) / bw), mode="bicubic")
    if tuple(out.shape[-2:]) != (h, w):  # the public code asserts the same
        raise RuntimeError(f"pos-embed interpolation gave {tuple(out.shape[-2:])}, not {(h, w)}")
    return out.permute(0, 2, 3, 1).reshape(1, h * w, d)


class Backbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        if cfg.pos_interp not in POS_INTERP:
            raise HarnessError(f"pos_interp={cfg.pos_interp!r}: pick one of {POS_INTERP}")
        if cfg.patch_embed_init not in PATCH_EMBED_INIT:
            raise HarnessError(
                f"patch_embed_init={cfg.patch_embed_init!r}: pick one of {PATCH_EMBED_INIT}"
            )
        self.cfg = cfg
        self.delayed = cfg.cls_layer is not None
        self.vit = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            num_classes=0,
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=True,
            drop_path_rate=cfg.drop_path,
            no_embed_class=self.delayed,
            dynamic_img_size=True,
            weight_init="moco" if cfg.moco_init else "",
        )
        self.base_grid = self.vit.patch_embed.grid_size
        self.norm_equiv = nn.LayerNorm(cfg.width, eps=1e-6) if cfg.equiv_layer else None
        if cfg.sincos_pos_embed:
            pe = sincos_2d(self.base_grid, cfg.width)
            if not self.delayed:  # the [CLS] slot of MoCo-v3's table is zero
                pe = torch.cat([torch.zeros(1, 1, cfg.width), pe], dim=1)
            self.vit.pos_embed.data.copy_(pe)
            self.vit.pos_embed.requires_grad_(False)
        if cfg.frozen_patch_embed:
            # timm leaves PatchEmbed's Conv2d at torch's default init (kaiming_uniform a=√5:
            # uniform ±1/√fan_in, bias likewise), which is what the public SER code freezes.
            proj = self.vit.patch_embed.proj
            if cfg.patch_embed_init == "moco_v3":
                bound = math.sqrt(6.0 / float(3 * cfg.patch_size**2 + cfg.width))
                nn.init.uniform_(proj.weight, -bound, bound)
                nn.init.zeros_(proj.bias)
            proj.requires_grad_(False)

    @property
    def width(self) -> int:
        return self.cfg.width

    @property
    def blocks(self) -> nn.ModuleList:
        return self.vit.blocks

    def _pos(self, grid: tuple[int, int]) -> torch.Tensor:
        n_prefix = 0 if self.delayed else 1
        pe = self.vit.pos_embed
        if tuple(grid) == tuple(self.base_grid):
            return pe
        if self.cfg.pos_interp == "public":  # the [CLS] slot, if any, is kept as it is
            patches = interpolate_pos_public(pe[:, n_prefix:], grid, self.base_grid)
            return torch.cat([pe[:, :n_prefix], patches], dim=1)
        return resample_abs_pos_embed(
            pe,
            list(grid),
            list(self.base_grid),
            num_prefix_tokens=n_prefix,
            interpolation="bicubic",
            antialias=False,
        )

    def forward(self, x: torch.Tensor, taps=(), n_last: int = 1) -> BackboneOutput:
        """Run the ViT; ``taps`` are layers whose patch-token maps to return.

        With ``n_last`` > 1 the returned ``cls`` is the concatenation of the final-LayerNorm'd
        [CLS] of the last ``n_last`` blocks (the linear-probe feature), last block first…last.
        """
        v = self.vit
        t = v.patch_embed(x)  # B×h×w×D (dynamic_img_size)
        b, h, w, d = t.shape
        t = t.reshape(b, h * w, d)
        pos = self._pos((h, w))
        cls = v.cls_token.expand(b, -1, -1)
        if self.delayed:
            t = t + pos
            has_cls = self.cfg.cls_layer == 0
            if has_cls:
                t = torch.cat([cls, t], dim=1)
        else:
            t = torch.cat([cls, t], dim=1) + pos
            has_cls = True
        out = BackboneOutput(cls=None, grid=(h, w))
        cls_outs = []
        depth = len(v.blocks)
        for i, blk in enumerate(v.blocks, start=1):
            t = blk(t)
            if i in taps:
                patches = t[:, 1:] if has_cls else t
                if i == self.cfg.equiv_layer and self.norm_equiv is not None:
                    patches = self.norm_equiv(patches)
                out.tokens[i] = patches.transpose(1, 2).reshape(b, d, h, w)
            if self.delayed and i == self.cfg.cls_layer:
                t = torch.cat([cls, t], dim=1)
                has_cls = True
            if i > depth - n_last:
                cls_outs.append(v.norm(t[:, 0]))
        out.cls = torch.cat(cls_outs, dim=-1) if n_last > 1 else cls_outs[-1]
        return out

    @torch.no_grad()
    def features(self, x: torch.Tensor, n_last: int = 4) -> torch.Tensor:
        """Linear-probe feature: final-LayerNorm [CLS] of the last ``n_last`` blocks."""
        return self.forward(x, n_last=n_last).cls
