"""Another harness run's ``checkpoint.pt``: its evaluated backbone, already in the harness's
names, and the architecture from the run's config."""

from __future__ import annotations

from harness.checkpoints.formats.base import CheckpointFormat, Source, top
from harness.errors import HarnessError
from harness.model.backbone import BackboneConfig


class Harness(CheckpointFormat):
    name = "harness"
    base_method = None  # the run's own base method (read from its config)

    def detect(self, obj) -> int:
        return (
            5 if isinstance(obj, dict) and all(k in obj for k in ("step", "model", "config")) else 0
        )

    def read(self, src: Source, obj, opts: dict) -> BackboneConfig:
        from harness.config import build_method, load_state

        if not isinstance(obj, dict) or any(k not in obj for k in ("step", "model", "config")):
            raise HarnessError(
                f"{src.path}: not a harness checkpoint (it lacks step, model or config); check "
                f"--format"
            )
        known = {
            "step": "training progress",
            "optimizer": "optimiser state",
            "rng": "random-number state",
            "config": "the run's config (architecture read from it)",
            "imported": "the import record of that run",
            "contents": "what the checkpoint holds",
        }
        top(src, obj, known, ("model",))
        src.hints["base"] = obj["config"].get("base")
        if obj.get("contents") == "backbone":
            bcfg = BackboneConfig(**obj["config"]["model"])
            for k, v in obj["model"].items():
                src.tensors[k], src.origin[k] = v, f"model.{k}"
            return bcfg
        method = build_method(obj["config"])
        load_state(method, obj["model"], src.path)
        backbone = method.eval_backbone()
        prefix = next(n for n, m in method.named_modules() if m is backbone) + "."
        for k in obj["model"]:
            if k.startswith(prefix):
                src.tensors[k[len(prefix) :]] = obj["model"][k]
                src.origin[k[len(prefix) :]] = f"model.{k}"
            else:
                src.skip(
                    f"model.{k}", "heads, target networks and state outside the evaluated backbone"
                )
        return backbone.cfg
