"""What a step costs and how big the model is: training FLOPs per image of one step
(forward + backward, ``torch.utils.flop_counter`` on the meta device: no data, no compute)
and trainable parameters of the online model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import config as C
from harness.data.augment import PARAMS
from harness.data.batches import build_policy
from harness.model.group import D4, Element
from harness.schedule import Progress


def _meta_batch(method, cfg: dict, batch_size: int) -> dict:
    """Shapes of a real batch on the meta device: the policy's views + SER's B2 pairs."""
    s, p = cfg["model"]["img_size"], cfg["model"]["patch_size"]
    policy = build_policy(method, cfg)
    n2 = policy.n_equiv(batch_size)
    n1, small = batch_size - n2, policy.augs.local.size

    def meta(n, size):
        return torch.empty(n, 3, size, size, device="meta")

    views = [[meta(n1, s)] for _ in range(2)] + [[meta(n1, small)] for _ in range(policy.n_local)]
    batch = {"views": views, "n_global": 2}
    if "clean_view" in policy.offers:
        batch["clean"] = meta(n1, s)
    if "rotated_crops" in policy.offers:
        batch["rotated"] = meta(4 * n1, small)
        batch["rot_labels"] = torch.arange(4, device="meta").repeat_interleave(n1)
    if "aug_params" in policy.offers:
        batch["params"] = [torch.zeros(n1, len(PARAMS), device="meta") for _ in range(2)]
        batch["params_z"] = batch["params"]
    if n2:
        pairs = []
        for a, b in policy.equiv_views:
            # The expected token area of SER's rescale is the crop's own grid.
            grid = ((s if a < 2 else small) // p,) * 2
            g_a = [Element(D4(i % 2, 0), grid, grid) for i in range(n2)]
            g_b = [Element(D4(1 - i % 2, 1), grid, grid) for i in range(n2)]
            for v, size in ((a, s if a < 2 else small), (b, s if a < 2 else small)):
                views[v].append(meta(n2, size))
            pairs.append((a, b, g_a, g_b))
        batch["equiv"] = {"chunk": 1, "pairs": pairs}
    return batch


def step_flops(
    method_name: str, preset: str, batch_size: int, overrides: Sequence[str] = ()
) -> float:
    """Training FLOPs (forward + backward) of one step, per image, without real data."""
    cfg = C.resolve(method_name, preset, overrides=[*overrides, f"train.batch_size={batch_size}"])
    return config_step_flops(cfg, batch_size)


def config_step_flops(cfg: dict, batch_size: int) -> float:
    """``step_flops`` of a resolved config (a planned job's, overrides included)."""
    cfg = {**cfg, "train": {**cfg["train"], "batch_size": batch_size}}
    with torch.device("meta"):
        method = C.build_method(cfg).train()
    batch = _meta_batch(method, cfg, batch_size)
    with FlopCounterMode(display=False) as fc:
        terms = method.training_step(batch, Progress(0, 1, 1))
        sum(terms.values()).backward()
    return fc.get_total_flops() / batch_size


def params_millions(
    method_name: str, preset: str = "paper", overrides: Sequence[str] = ()
) -> float:
    cfg = C.resolve(method_name, preset, overrides=overrides)
    with torch.device("meta"):
        method = C.build_method(cfg)
    return sum(p.numel() for p in method.trainable_parameters()) / 1e6
