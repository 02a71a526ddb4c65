"""A timm ``VisionTransformer`` state dict, bare or in timm's training checkpoint
(``head.*`` is the classifier, skipped)."""

from __future__ import annotations

import json

from harness.checkpoints.formats.base import CheckpointFormat, Source, bare, tensors_of, top


class Timm(CheckpointFormat):
    name = "timm"
    base_method = "dino"

    def detect(self, obj) -> int:
        if isinstance(obj, dict) and (
            isinstance(obj.get("state_dict"), dict) or "pos_embed" in obj
        ):
            return 1
        return 0

    def read(self, src: Source, obj, opts: dict) -> None:
        src.hints["pos_interp"] = "timm"  # timm resamples its table to other sizes itself
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            top(
                src,
                obj,
                {
                    "epoch": "training progress",
                    "arch": "architecture name",
                    "optimizer": "optimiser state",
                    "version": "checkpoint version",
                    "args": "training arguments",
                    "metric": "validation metric",
                    "state_dict_ema": "EMA weights (the state_dict is imported)",
                    "amp_scaler": "mixed-precision scaler state",
                },
                ("state_dict",),
            )
            bare(src, obj["state_dict"], "module.")
            return
        bare(src, tensors_of(src, obj, "the file"))
        # harness export's record beside the file: the timm arguments, heads among them.
        side = src.path.with_name(src.path.name + ".json")
        try:
            record = json.loads(side.read_text())
            src.hints["heads"] = record["timm_VisionTransformer_kwargs"]["num_heads"]
            src.hints["pos_interp"] = record["harness_model"]["pos_interp"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
