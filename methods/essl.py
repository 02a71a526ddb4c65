"""E-SSL (Dangovski et al., 2022; spec/methods.md §7): four-fold rotation prediction.

Every image gives one small crop, seen in all four 90° rotations (the ``rot4`` view
policy); a LayerNorm MLP on the backbone feature (the final [CLS], or the pooled layer-K map
under ``@layerK``) predicts which: Linear(D, D)-LN-ReLU ×2, Linear(D, out)-LN, Linear(out, 4),
biases on, LayerNorm eps 1e-5. The term is λ · CE(logits, labels), the mean over all 4B
rotated crops, added once to the base loss.

Default (version 2) on MoCo-v3: what the public SER code computed (aitrics-chris/SER
``builder/moco.py``: ``train_essl`` adds ``equiv_lambda`` · CE, ``equiv_lambda`` = 1.0, the
default of ``main_moco.py``, since SER publishes no E-SSL command; ``MoCo.projector_equiv``
is Linear(384, 384)-LN-ReLU-Linear(384, 384)-LN-ReLU-Linear(384, 256)-LN-Linear(256, 4) on
the online encoder's final [CLS]). ``@original`` gives E-SSL's own values, what the harness
computed before (version 1): λ at the base loss's scale as the official commands (0.4 for
contrastive / cross-entropy losses, E-SimCLR's, also used for DINO; 8 for Barlow Twins) and
the 128-wide projection (SimCLR's; 256 for Barlow Twins). DINO and Barlow Twins take SER's
values by default too (``main_dino.py``: λ 0.3, ``main_barlowtwins.py``: 1.0; the same 256-wide
head on the final [CLS] in ``builder/dino.py`` / ``builder/barlowtwins.py``); ``@original``
gives E-SSL's there as well. Another base names λ (``@lambdaL``).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from methods.base import AddOn
from methods.heads import ln_mlp
from methods.registry import register_addon

# (λ, projection width at paper scale) per base.
# SER's main_*.py defaults of --equiv-lambda and builder/*.py's projector_equiv (the same head
# on every base): moco_v3 1.0, dino 0.3, barlow_twins 1.0.
SER = {"moco_v3": (1.0, 256), "dino": (0.3, 256), "barlow_twins": (1.0, 256)}
ORIGINAL = {"moco_v3": (0.4, 128), "dino": (0.4, 128), "barlow_twins": (8.0, 256)}
ORIGINAL_WIDTH = 128  # SimCLR's, for a base neither table knows (with @lambdaL)


@register_addon("essl")
class ESSL(AddOn):
    version = 2  # SER's λ and head by default; version 1 = @original
    description = "E-SSL: predict the 90° rotation of a small crop (LayerNorm head)"
    modifier_help = (
        "@layerK @lambdaL @original (E-SSL's own λ and head: 0.4 / 128 on MoCo-v3 and DINO, "
        "8 / 256 on Barlow Twins; default: SER's 1.0 / 0.3 / 1.0, 256-wide)"
    )
    requires = ("rotated_crops",)

    def __init__(
        self,
        base_name: str,
        layer: int | None = None,
        lam: float | None = None,
        original: bool = False,
    ):
        super().__init__(base_name, layer)
        self.original = original
        table = ORIGINAL if original else {**ORIGINAL, **SER}
        if lam is None and base_name not in table:
            raise HarnessError(
                f"{self.name} has no λ for base '{base_name}' (it knows {', '.join(table)}): "
                f"name it, e.g. {base_name}+{self.name}@lambda0.4"
            )
        default_lam, self.out_width = table.get(base_name, (None, ORIGINAL_WIDTH))
        self.lam = default_lam if lam is None else lam

    @classmethod
    def parse_modifier(cls, token):
        if token == "original":
            return {"original": True}
        m = re.fullmatch(r"lambda([0-9.e-]+)", token)
        return {"lam": float(m.group(1))} if m else super().parse_modifier(token)

    def attach(self, method):
        # Hidden width = backbone width (SER's 384 at ViT-S, as the ResNet-50 original's 2048
        # for 2048-d features); the projection width scales with the preset.
        d = method.backbone.width
        self.head = ln_mlp(d, d, self.width(self.out_width), 4)

    def losses(self, method, batch, online, target, progress):
        logits = self.head(self.feature(batch["encoded"]["rotated"]))
        return {"loss_essl": self.lam * F.cross_entropy(logits, batch["rot_labels"])}


def _fixed_term(original: bool) -> tuple[float, int]:
    """λ·CE of a seeded ViT-S-width head on fixed [CLS] features, and the head's size."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        add = ESSL("moco_v3", original=original)
        head = ln_mlp(384, 384, add.out_width, 4).double()
        feats = torch.randn(64, 384, dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(16)
    loss = add.lam * F.cross_entropy(head(feats), labels)
    return loss.item(), sum(p.numel() for p in head.parameters())


def head_lambda_effect() -> str:
    """The ``essl-head-lambda`` departure's size: the E-SSL term and head, default vs
    ``@original``, on MoCo-v3 at ViT-S width (fixed tensors, a seeded head)."""
    ser, n_ser = _fixed_term(False)
    orig, n_orig = _fixed_term(True)
    return (
        f"@original's E-SSL term is {orig / ser:.3f}× SER's on fixed tensors "
        f"({orig:.4f} vs {ser:.4f}); its head has {n_orig - n_ser:+,} parameters at ViT-S "
        f"({n_orig:,} vs {n_ser:,})"
    )
