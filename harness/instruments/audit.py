"""Where each loss term's gradient goes: per-term gradient norms on each parameter group, for
one real batch of random-noise images (under torchrun, each rank its shard of the same global
batch, gradients averaged as in training). Needs no data and no trained model."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from harness import config as C
from harness.data.batches import PretrainBatches, build_policy, to_device
from harness.parallel import dist
from harness.parallel.global_bn import global_batchnorm
from harness.schedule import Progress


def _group_of(name: str, method) -> str | None:
    m = re.match(r"backbone\.vit\.blocks\.(\d+)\.", name)
    if m:
        return f"blocks.{m.group(1)}"
    for prefix, group in (
        ("backbone.vit.patch_embed.", "patch_embed"),
        ("backbone.vit.pos_embed", "pos_embed"),
        ("backbone.vit.cls_token", "cls_token"),
        ("backbone.vit.norm.", "norm"),
        ("backbone.norm_equiv.", "norm_equiv"),
    ):
        if name.startswith(prefix):
            return group
    m = re.match(r"addons\.(\d+)\.([^.]+)\.", name)
    if m:
        return f"{method.addons[int(m.group(1))].name}.{m.group(2)}"
    top = name.split(".")[0]
    if top.startswith(("momentum_", "teacher_")):
        return None  # gradient-free copies
    return top


def groups(method) -> dict[str, list]:
    depth = len(method.backbone.blocks)
    names = [
        "patch_embed",
        "pos_embed",
        *[f"blocks.{i}" for i in range(depth)],
        "cls_token",
        "norm_equiv",
        "norm",
    ]
    out: dict[str, list] = {n: [] for n in names}
    for n, p in method.named_parameters():
        g = _group_of(n, method)
        if g is not None:
            out.setdefault(g, []).append(p)
    return out


def random_batch(method, cfg: dict, seed: int = 0, world: int | None = None) -> dict:
    """One real global batch through the method's view policy, from random-noise images.

    Laid out for ``world`` ranks (default: the current world size): SER's subset is
    ``world`` times one rank's share, so ``shard_batch`` gives each rank what training would.
    """
    policy = build_policy(method, cfg)
    rng = np.random.default_rng(seed)
    size = cfg["model"]["img_size"] + cfg["model"]["img_size"] // 8
    n = cfg["train"]["batch_size"]
    imgs = [
        (Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)), 0)
        for _ in range(n)
    ]
    batches = PretrainBatches(imgs, policy, n, seed)
    world = dist.world_size() if world is None else world
    # One process draws the whole batch, whatever torch.distributed says, so that every
    # rank holds the same global batch and a multi-process run can be compared with one.
    batches.rank, batches.world, batches.local_batch = 0, 1, n
    batches.n_equiv = world * policy.n_equiv(n // world)
    return batches[0]


def shard_batch(batch: dict, rank: int, world: int) -> dict:
    """Rank ``rank``'s share of a ``random_batch``: the same slice of every per-image run."""

    def cut(x, runs: int = 1):
        # ``runs`` equal blocks of per-image rows (E-SSL's four rotations of one crop each).
        step, n = len(x) // runs, len(x) // (runs * world)
        parts = [x[r * step + rank * n : r * step + (rank + 1) * n] for r in range(runs)]
        return torch.cat(parts) if isinstance(x, torch.Tensor) else sum(parts, [])

    out = {}
    for key, v in batch.items():
        if key == "views":
            out[key] = [[cut(x) for x in chunks] for chunks in v]
        elif key in ("params", "params_z"):
            out[key] = [cut(x) for x in v]
        elif key == "clean":
            out[key] = cut(v)
        elif key in ("rotated", "rot_labels"):
            out[key] = cut(v, runs=4)
        elif key == "equiv":
            out[key] = {**v, "pairs": [(a, b, cut(ga), cut(gb)) for a, b, ga, gb in v["pairs"]]}
        elif key in ("n_global", "jitter"):  # one per batch: every rank's share has it
            out[key] = v
        else:  # a new per-image input must say how it splits
            raise KeyError(f"shard_batch does not know how to split batch['{key}']")
    return out


def audit(
    method_name: str, preset: str = "tiny", seed: int = 0, overrides: Sequence[str] = ()
) -> dict:
    """Gradient norm that each loss term alone puts on each parameter group.

    Under torchrun (gloo or NCCL) each rank takes its shard of one global batch and the
    gradients are averaged across ranks as training averages them, so every rank returns
    what one process gives on the whole batch.
    """
    dist.init_from_env()
    cfg = C.resolve(method_name, preset, seed, overrides=overrides)
    torch.manual_seed(seed)  # the same seed on every rank: identical initial weights
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.is_dist() and torch.cuda.is_available()
        else torch.device("cpu")
    )
    method = global_batchnorm(C.build_method(cfg).to(device).train(), device)
    batch = random_batch(method, cfg, seed)
    if dist.is_dist():
        batch = to_device(shard_batch(batch, dist.rank(), dist.world_size()), device)
    terms = method.training_step(batch, Progress(0, 1, 1))
    grp = groups(method)
    live = [p for p in method.parameters() if p.requires_grad]
    result = {"method": cfg["method"], "preset": preset, "terms": {}}
    for term, value in terms.items():
        # A detached term (ser_detached) reaches nothing: every norm is 0. One backward per
        # term, the same on every rank, so the cross-rank backward collectives pair up.
        grads = (
            torch.autograd.grad(value, live, retain_graph=True, allow_unused=True)
            if value.requires_grad
            else [None] * len(live)
        )
        by_param = {id(p): g for p, g in zip(live, grads)}
        norms = {}
        for g, params in grp.items():
            # The norm of the rank-averaged gradient, not the average of per-rank norms.
            got = [by_param.get(id(p)) for p in params]
            vec = torch.cat(
                [torch.zeros(0, device=device)] + [x.flatten() for x in got if x is not None]
            )
            norms[g] = float(dist.all_reduce_mean(vec).norm())
        result["terms"][term] = norms
    return result
