"""Published and foreign checkpoints read into the harness Backbone's state dict; nothing is
written here (``harness.checkpoints.exchange`` makes runs of them). Each key layout is a class
in ``harness.checkpoints.formats`` (dino, moco_v3, timm, ser, harness); what they share (loading
the file, reading the architecture off the tensors, checking every key) is here.

Every key of the source is either loaded or deliberately skipped (heads, optimiser state, the
other branch); a missing, unexpected or mis-shaped backbone key stops with one line naming it.

Files are read with ``weights_only=True`` (``harness.config.build.safe_load``): what these
layouts hold besides tensors (DINO's and SER's ``argparse.Namespace``, numpy arrays, SER's heads
as ``torch.nn`` layers) is allowed by name; anything else is refused before it can run.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import torch

from harness.checkpoints.formats import FORMATS, get
from harness.checkpoints.formats import detect as _detect
from harness.checkpoints.formats.base import Source
from harness.checkpoints.formats.ser import square
from harness.config.build import UnsafeFile, safe_load
from harness.errors import HarnessError
from harness.model.backbone import Backbone, BackboneConfig

__all__ = ["FORMATS", "arch_text", "detect_format", "load_backbone", "parse_options", "read_source"]


def _load(path: Path):
    try:
        if path.suffix == ".safetensors":  # tensors only, nothing to unpickle
            from safetensors.torch import load_file

            return load_file(str(path))
        return safe_load(path, published=True)
    except UnsafeFile:
        raise
    except Exception as e:  # not a torch file, cut short
        raise HarnessError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''}): check the path and the download"
        ) from None


def _need(src: Source, key: str) -> torch.Tensor:
    if key not in src.tensors:
        raise HarnessError(
            f"{src.path}: backbone key '{key[4:] if key.startswith('vit.') else key}' is missing "
            f"(format {src.fmt}): the file is not a complete ViT backbone of that layout; check "
            f"--format and its options"
        )
    return src.tensors[key]


def _infer(src: Source, model: dict) -> dict:
    """Width, depth, patch, MLP ratio, image size and [CLS] layout read from the tensors;
    ``model`` (overrides) wins where given."""
    t = src.tensors
    width = int(_need(src, "vit.cls_token").shape[-1])
    proj = _need(src, "vit.patch_embed.proj.weight")
    pe = _need(src, "vit.pos_embed")
    blocks = {int(m.group(1)) for k in t if (m := re.match(r"vit\.blocks\.(\d+)\.", k))}
    if not blocks:
        raise HarnessError(f"{src.path}: no 'blocks.N.*' keys: not a ViT backbone (check --format)")
    fc1 = _need(src, "vit.blocks.0.mlp.fc1.weight")
    arch: dict = {
        "width": width,
        "depth": max(blocks) + 1,
        "patch_size": int(proj.shape[-1]),
        "mlp_ratio": float(fc1.shape[0]) / width,
    }
    n = int(pe.shape[1]) if pe.dim() == 3 else 0
    fmt = get(src.fmt)
    delayed = fmt.layout(src, model, arch, n)
    grid = square(n if delayed else n - 1)
    if "img_size" not in model:
        if grid is None:
            raise HarnessError(
                f"{src.path}: pos_embed has {n} entries, not {'' if delayed else '1 + '}a square "
                f"grid: give the training image size as model.img_size=PIXELS"
            )
        arch["img_size"] = grid * arch["patch_size"]
    if "heads" not in model:
        if src.hints.get("heads"):
            arch["heads"] = int(src.hints["heads"])
        elif fmt.default_heads:
            arch["heads"] = fmt.default_heads
        elif width % 64 == 0:
            arch["heads"] = width // 64  # timm's and DINO's ViT-Ti/S/B/L: head width 64
        else:
            raise HarnessError(
                f"{src.path}: width {width} is not a multiple of 64, so the number of attention "
                f"heads cannot be assumed: give it as model.heads=N"
            )
    for hint in ("sincos_pos_embed", "pos_interp"):
        if hint in src.hints:
            arch[hint] = src.hints[hint]
    out = {**arch, **model}
    if out["width"] % out["heads"]:
        raise HarnessError(
            f"model.heads={out['heads']} does not divide width {out['width']}: give the heads "
            f"the checkpoint was trained with"
        )
    return out


def parse_options(fmt: str, options) -> tuple[dict, dict]:
    """``key=value`` arguments of format ``fmt``: ``model.FIELD`` overrides and its options."""
    return get(fmt).parse_options(options)


def read_source(path, fmt: str, options=()) -> tuple[BackboneConfig, dict, Source]:
    """The architecture and backbone state dict of the checkpoint at ``path`` in layout
    ``fmt``, checked key by key against the harness Backbone; and the source's record."""
    path = Path(path)
    layout = get(fmt)
    if not path.is_file():
        raise HarnessError(f"{path} does not exist or is not a file: give the checkpoint's path")
    model, opts = layout.parse_options(options)
    src = Source(path, fmt)
    bcfg = layout.read(src, _load(path), opts)
    if bcfg is not None:  # the file names its architecture
        if model:
            bcfg = BackboneConfig(**{**asdict(bcfg), **model})
    else:
        arch = _infer(src, model)
        bcfg = BackboneConfig(**{**asdict(BackboneConfig()), "drop_path": 0.0, **arch})
    return bcfg, _check(src, bcfg), src


def _name(src: Source, key: str) -> str:
    return src.origin.get(key, key[4:] if key.startswith("vit.") else key)


def _check(src: Source, bcfg: BackboneConfig) -> dict:
    """The backbone state dict, every key present, none extra, every shape right."""
    try:
        expected = Backbone(bcfg).state_dict()
    except (AssertionError, ValueError, RuntimeError) as e:
        raise HarnessError(f"{src.path}: architecture {bcfg} cannot be built: {e}") from None
    missing = [k for k in expected if k not in src.tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise HarnessError(
            f"{src.path}: backbone key '{_name(src, missing[0])}' is missing{more} (format "
            f"{src.fmt}, {arch_text(bcfg)}): the file is incomplete or of another layout; check "
            f"--format and model.KEY= overrides"
        )
    extra = [k for k in src.tensors if k not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise HarnessError(
            f"{src.path}: unexpected key '{_name(src, extra[0])}'{more}: not part of a "
            f"{arch_text(bcfg)} backbone nor a head or training-state entry of format {src.fmt}; "
            f"check --format and model.KEY= overrides"
        )
    for k, v in expected.items():
        if tuple(src.tensors[k].shape) != tuple(v.shape):
            raise HarnessError(
                f"{src.path}: key '{_name(src, k)}' has shape {tuple(src.tensors[k].shape)}, "
                f"the backbone ({arch_text(bcfg)}) expects {tuple(v.shape)}: the file is not of one "
                f"architecture, or give it as model.KEY= overrides"
            )
    return {
        k: src.tensors[k].detach().to(v.dtype).clone().contiguous() for k, v in expected.items()
    }


def arch_text(b: BackboneConfig) -> str:
    cls = "standard [CLS]" if b.cls_layer is None else f"[CLS] after block {b.cls_layer}"
    return (
        f"width {b.width}, depth {b.depth}, {b.heads} heads, patch {b.patch_size}, "
        f"{b.img_size} px, {cls}"
    )


def load_backbone(path, fmt: str, options=()) -> Backbone:
    """The checkpoint's backbone, built and loaded (eval mode), without writing anything."""
    bcfg, state, _ = read_source(path, fmt, options)
    backbone = Backbone(bcfg)
    backbone.load_state_dict(state)
    return backbone.eval()


def detect_format(path) -> str:
    """The format of a checkpoint file from its layout (for ``NAME=import:PATH`` rows)."""
    name = _detect(_load(Path(path)))
    if name is None:
        raise HarnessError(
            f"cannot tell the layout of {path}: import it with harness import NAME PATH --format "
            f"F ({', '.join(FORMATS)}) and name the row NAME"
        )
    return name
