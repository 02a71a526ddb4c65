"""Table 1's parameter column: the trainable parameters of the run's online model (what the
paper's "Params" counts: backbone, heads and add-on modules, not EMA copies or frozen
layers), built on the meta device from the run's config, and the same count at the paper's
ViT-S/16 shapes so the report can footnote where it differs from the paper's printed value
(+AugSelf: 44.21M as SER's augself branch builds it, two 768→512→512→4 heads; the paper
prints 43.7M)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness import config as C

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


def count_millions(cfg: dict) -> float:
    with torch.device("meta"):
        method = C.build_method(cfg)
    return sum(p.numel() for p in method.trainable_parameters()) / 1e6


def run_params(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: {"params_m": at the run's shapes, "paper_params_m": at the paper preset's}
    in millions; an imported checkpoint (its backbone only) has neither heads nor a recipe
    to rebuild, so it reports its backbone's count alone."""
    if cfg.get("imported"):
        backbone = C.load_trained(run_dir, torch.device("cpu")).eval_backbone()
        return {"params_m": sum(p.numel() for p in backbone.parameters()) / 1e6}
    paper = C.resolve(cfg["method"], "paper")
    return {"params_m": count_millions(cfg), "paper_params_m": count_millions(paper)}
