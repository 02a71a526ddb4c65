"""The public SER code's checkpoint: ``student``/``teacher`` state dicts of its
``vision_transformer.py``, 196 positional entries without a [CLS] slot in SER mode,
``norm_equiv``, the [CLS] layer = ``args.equiv_layer``; teacher by default."""

from __future__ import annotations

import math

from harness.checkpoints.formats.base import (
    CheckpointFormat,
    Option,
    Source,
    branch_keys,
    has_branches,
    no_branch,
    read_branch,
    strip,
    tensors_of,
)
from harness.errors import HarnessError


def square(n: int) -> int | None:
    r = math.isqrt(n) if n > 0 else 0
    return r if r > 0 and r * r == n else None


class Ser(CheckpointFormat):
    name = "ser"
    base_method = "moco_v3"
    options = (Option("branch", "teacher", ("teacher", "student")),)

    def detect(self, obj) -> int:
        return 2 if branch_keys(obj) is not None else 0

    def read(self, src: Source, obj, opts: dict) -> None:
        if has_branches(obj):
            branch = read_branch(
                src,
                obj,
                opts,
                "SER",
                {
                    "student_head": "projection head",
                    "teacher_head": "projection head",
                    "projector_equiv": "equivariance projector",
                    "optimizer": "optimiser state",
                    "scaler": "mixed-precision scaler state",
                    "loss_list_inv": "loss history",
                    "loss_list_equiv": "loss history",
                    "epoch": "training progress",
                    "args": "training arguments (equiv_layer, equiv_mode read from them)",
                    "dino_loss": "DINO loss state",
                    "fp16_scaler": "mixed-precision scaler state",
                },
            )
            args = obj.get("args")
            for a in ("equiv_layer", "equiv_mode"):
                if getattr(args, a, None) is not None:
                    src.hints[a] = getattr(args, a)
            sd, where = obj[branch], f"{branch}."
        else:
            no_branch(src, opts, "bare state dict")
            sd, where = tensors_of(src, obj, "the file"), ""
        for k, v in sd.items():
            name = strip(k, "module.", "backbone.")
            if name.startswith("head."):
                src.skip(f"{where}{k}", "projection head")
            else:
                src.take(f"{where}{k}", name, v)

    def layout(self, src: Source, model: dict, arch: dict, n: int) -> bool:
        """The delayed [CLS] (no slot in the positional table, inserted after
        ``args.equiv_layer``) and ``norm_equiv``'s layer."""
        t = src.tensors
        delayed = square(n) is not None
        mode, layer = src.hints.get("equiv_mode"), src.hints.get("equiv_layer")
        if delayed:
            if mode is not None and "erl" not in str(mode):
                raise HarnessError(
                    f"{src.path}: {n} positional entries (no [CLS] slot) but args.equiv_mode="
                    f"{mode!r}: the file contradicts itself; check the checkpoint"
                )
            cls_layer = model.get("cls_layer", layer)
            if cls_layer is None:
                raise HarnessError(
                    f"{src.path}: SER layout ({n} positional entries, no [CLS] slot) and no "
                    f"args.equiv_layer in the file: give the [CLS] layer as model.cls_layer=K"
                )
            if not 0 < int(cls_layer) < arch["depth"]:
                raise HarnessError(
                    f"{src.path}: [CLS] layer {cls_layer} of a {arch['depth']}-block ViT: the "
                    f"public code inserts no [CLS] then; give model.cls_layer=K with 0 < K < depth"
                )
            arch["cls_layer"] = int(cls_layer)
        if any(k.startswith("norm_equiv.") for k in t):
            eq = model.get("equiv_layer", layer if layer is not None else arch.get("cls_layer"))
            if eq is None or int(eq) >= arch["depth"]:
                # equiv_layer == depth: the public code's norm_equiv is the final norm itself.
                for k in [k for k in t if k.startswith("norm_equiv.")]:
                    src.skip(src.origin.pop(k), "alias of the final norm (equiv_layer = depth)")
                    del t[k]
            else:
                arch["equiv_layer"] = int(eq)
        return delayed
