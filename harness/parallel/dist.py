"""Every cross-sample reduction of the harness goes through here.

With torch.distributed not initialised (or world size 1) each function is the exact identity
of its single-process meaning, so losses written against this module are correct both ways.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns to each rank the summed gradient of its own shard.

    Every rank computes a loss on the gathered tensor; the shard a rank contributed
    receives the gradient of all those losses (all_reduce), so nothing is lost across ranks.
    """

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.n = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        r = rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


def gather(x: torch.Tensor, grad: bool = True) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) along dim 0 across ranks.

    ``grad=True`` keeps the gradient of the local shard (SER tokens, NT-Xent negatives);
    ``grad=False`` detaches everything (MoCo-v3 keys).
    """
    if not is_dist():
        return x if grad else x.detach()
    if grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


class _GatherVaryingWithGrad(torch.autograd.Function):
    """``_GatherWithGrad`` for shards whose row counts differ across ranks."""

    @staticmethod
    def forward(ctx, x, counts):
        ctx.counts = counts
        return _gather_padded(x, counts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = sum(ctx.counts[: rank()])
        return grad[start : start + ctx.counts[rank()]], None


def _gather_padded(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    # all_gather needs one shape: pad every shard to the longest, then cut the padding off.
    pad = max(counts) - x.shape[0]
    xp = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    parts = [torch.empty_like(xp) for _ in range(world_size())]
    dist.all_gather(parts, xp.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


def gather_varying(x: torch.Tensor, grad: bool = True) -> tuple[torch.Tensor, list[int]]:
    """``gather`` for shards whose length along dim 0 may differ across ranks (SER's token
    maps when every rank draws its own grid, as the public code does). Returns the
    concatenation and each rank's row count, so a rank finds its own rows at
    ``sum(counts[:rank()])``. The counts are exchanged first (one small all_gather)."""
    if not is_dist():
        return (x if grad else x.detach()), [x.shape[0]]
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    if grad:
        return _GatherVaryingWithGrad.apply(x, counts), counts
    return _gather_padded(x.detach(), counts), counts


class _AllReduceSum(torch.autograd.Function):
    """Sum across ranks whose backward is the sum of every rank's gradient: each rank's
    input reaches every rank's loss. (torch.distributed.nn's version is deprecated.)"""

    @staticmethod
    def forward(ctx, x):
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        # Reduce a copy: autograd may share grad with other nodes.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum across ranks, differentiable (Barlow Twins' cross-correlation, global BatchNorm)."""
    if not is_dist():
        return x
    return _AllReduceSum.apply(x)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean across ranks, no gradient (DINO's center)."""
    if not is_dist():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size()


def env_rank() -> int:
    """This process's global rank from torchrun's or Slurm's environment, before (or without)
    ``init_from_env``: 0 for a single process."""
    if os.environ.get("RANK"):
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ.get("SLURM_PROCID", "0"))
    return 0


def init_from_env() -> bool:
    """Start torch.distributed from torchrun's or submitit's (Slurm) environment.

    Returns False, and does nothing, for a single process. Called once per job.
    """
    if is_dist():
        return True
    if not os.environ.get("WORLD_SIZE") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def average_gradients(params) -> None:
    """What DDP does after backward: every rank ends with the mean gradient."""
    if not is_dist():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size())
