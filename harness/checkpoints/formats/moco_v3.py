"""MoCo-v3's ``main_moco.py`` checkpoint: ``state_dict`` with ``module.base_encoder.``/
``module.momentum_encoder.`` (timm ViTs whose ``head`` is the projector) and
``module.predictor.``; the base encoder by default, 12 heads for ViT-S, the fixed 2-D sin-cos
embedding."""

from __future__ import annotations

from harness.checkpoints.formats.base import CheckpointFormat, Option, Source, tensors_of, top
from harness.errors import HarnessError


class MocoV3(CheckpointFormat):
    name = "moco_v3"
    base_method = "moco_v3"
    options = (Option("encoder", "base", ("base", "momentum")),)
    default_heads = 12  # MoCo-v3's vit_small/vit_base/vit_conv_* all use 12

    def detect(self, obj) -> int:
        sd = obj.get("state_dict") if isinstance(obj, dict) else None
        if isinstance(sd, dict) and any(str(k).startswith("module.base_encoder.") for k in sd):
            return 4
        return 0

    def read(self, src: Source, obj, opts: dict) -> None:
        if not isinstance(obj, dict) or "state_dict" not in obj:
            raise HarnessError(
                f"{src.path}: no 'state_dict' entry: not a MoCo-v3 checkpoint (its main_moco.py "
                f"saves epoch, arch, state_dict, optimizer, scaler); check --format"
            )
        top(
            src,
            obj,
            {
                "epoch": "training progress",
                "arch": "architecture name",
                "optimizer": "optimiser state",
                "scaler": "mixed-precision scaler state",
                "best_acc1": "linear-probe accuracy",
            },
            ("state_dict",),
        )
        encoder = self.option(opts, "encoder")
        mine = f"module.{encoder}_encoder."
        other = "module.momentum_encoder." if encoder == "base" else "module.base_encoder."
        sd = tensors_of(src, obj["state_dict"], "'state_dict'")
        if not any(k.startswith(mine) for k in sd):
            raise HarnessError(
                f"{src.path}: no '{mine}*' keys in state_dict: not a MoCo-v3 pretraining "
                f"checkpoint (a linear-probe checkpoint or another layout?); check --format and "
                f"encoder="
            )
        for k, v in sd.items():
            if k.startswith(mine):
                name = k[len(mine) :]
                if name.startswith("head."):
                    src.skip(f"state_dict.{k}", "MoCo-v3 projector (installed as the ViT head)")
                else:
                    src.take(f"state_dict.{k}", name, v)
            elif k.startswith(other):
                src.skip(f"state_dict.{k}", f"the other encoder (encoder={encoder} is imported)")
            elif k.startswith("module.predictor."):
                src.skip(f"state_dict.{k}", "MoCo-v3 predictor")
            else:
                raise src.unexpected(f"state_dict.{k}")
        src.hints["sincos_pos_embed"] = True
