"""facebookresearch/dino: ``vision_transformer.py`` names (timm's), a backbone-only state dict
(the released ``dino_deitsmall16_pretrain.pth``) or the training checkpoint (``student`` with
``module.backbone.``/``module.head.``, ``teacher`` with ``backbone.``/``head.``, ``optimizer``,
``epoch``, ``args``, ``dino_loss``, ``fp16_scaler``); teacher by default."""

from __future__ import annotations

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


class Dino(CheckpointFormat):
    name = "dino"
    base_method = "dino"
    options = (Option("branch", "teacher", ("teacher", "student")),)

    def detect(self, obj) -> int:
        keys = branch_keys(obj)
        return (
            3 if keys and any(k.startswith(("backbone.", "module.backbone.")) for k in keys) else 0
        )

    def read(self, src: Source, obj, opts: dict) -> None:
        if has_branches(obj):
            branch = read_branch(
                src,
                obj,
                opts,
                "DINO",
                {
                    "optimizer": "optimiser state",
                    "epoch": "training progress",
                    "args": "training arguments",
                    "dino_loss": "DINO loss state (the centre)",
                    "fp16_scaler": "mixed-precision scaler state",
                },
            )
            for k, v in tensors_of(src, obj[branch], f"'{branch}'").items():
                name = strip(k, "module.")
                if name.startswith("head."):
                    src.skip(f"{branch}.{k}", "DINO projection head")
                elif name.startswith("backbone."):
                    src.take(f"{branch}.{k}", name[len("backbone.") :], v)
                else:
                    raise src.unexpected(f"{branch}.{k}", "neither backbone. nor head.")
            return
        no_branch(src, opts, "backbone-only state dict")
        sd = tensors_of(src, obj, "the file")
        prefix = next(
            (
                p
                for p in ("module.backbone.", "backbone.", "module.")
                if all(k.startswith((p, "module.head.", "head.")) for k in sd)
            ),
            "",
        )
        for k, v in sd.items():
            name = strip(k, prefix, "module.")
            if name.startswith("head."):
                src.skip(k, "DINO projection head")
            else:
                src.take(k, name, v)
