"""BatchNorm over the global batch on any device: what ``torch.nn.SyncBatchNorm`` does on
CUDA, for CPU (gloo) runs, which SyncBatchNorm refuses.

The specs' BatchNorms (MoCo-v3's and Barlow Twins' projectors, AugSelf / STL / EquiMod heads)
normalise with the statistics of the whole batch; per-rank statistics would make N processes
train a different model than one process on the same batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from harness.parallel import dist


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A ``_BatchNorm`` (same parameters, buffers and state-dict keys) whose training
    statistics are reduced across ranks with a differentiable all-reduce, so the backward
    pass carries every rank's gradient through the shared mean and variance."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch of at least 2-d inputs (N×C…), got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        batch_stats = self.training or self.running_mean is None
        if not (batch_stats and dist.is_dist()):
            return super().forward(x)  # one process or eval: torch's own BatchNorm
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        # The count rides with the sum (one collective); ranks may hold unequal shards.
        local_n = x.new_tensor([x.numel() / x.shape[1]])
        s = dist.all_reduce_sum(torch.cat([x.sum(dims), local_n]))
        n = s[-1].detach()
        if n <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got {int(n)}")
        mean = s[:-1] / n
        # Two passes (centred sum of squares), not E[x²]−E[x]²: no cancellation when |mean| ≫ std.
        xc = x - mean.reshape(shape)
        var = dist.all_reduce_sum(xc.pow(2).sum(dims)) / n
        y = xc * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.training and self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), float(n))
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        # As torch's BatchNorm on the whole batch: unbiased variance, momentum=None is the
        # cumulative average over the batches seen so far.
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_((var * n / (n - 1)).to(self.running_var.dtype), alpha=m)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Every ``_BatchNorm`` in ``module`` becomes a GlobalBatchNorm with the same parameters,
    buffers, mode and requires_grad (momentum copies stay frozen)."""
    bn = nn.modules.batchnorm._BatchNorm
    if isinstance(module, bn) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:  # the same Parameter objects: requires_grad and optimiser state hold
            out.weight, out.bias = module.weight, module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """The specs' BatchNorms with global-batch statistics when distributed: torch's
    SyncBatchNorm on CUDA, ``GlobalBatchNorm`` elsewhere (SyncBatchNorm refuses CPU)."""
    if not dist.is_dist():
        return module
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return convert_global_batchnorm(module)
