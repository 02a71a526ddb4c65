"""From a resolved config to objects: the Method it describes, and a finished run's trained
Method read back from its checkpoint (what every evaluation starts from)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.model.backbone import BackboneConfig
from methods.registry import parse


def build_method(cfg: dict):
    """The Method of a resolved config (add-ons instantiated with their resolved options,
    head widths at the paper's × the preset's ``heads.width_factor``)."""
    base_cls, _ = parse(cfg["method"])
    from methods.registry import ADDONS

    addons = [ADDONS[a["name"]](cfg["base"], **a["options"]) for a in cfg["addons"]]
    bcfg = BackboneConfig(**cfg["model"])
    for a in addons:
        bcfg = a.configure_backbone(bcfg)
    width_factor = cfg.get("heads", {}).get("width_factor", 1.0)
    return base_cls(bcfg, cfg["recipe"], addons, width_factor)


def load_trained(run_dir: Path, device="cpu"):
    """The trained Method of a finished run (for evaluations)."""
    ck = torch.load(Path(run_dir) / "checkpoint.pt", map_location=device, weights_only=False)
    method = build_method(ck["config"])
    method.load_state_dict(ck["model"])
    return method.eval()
