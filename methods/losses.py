"""Pure loss functions of the base methods and of SER.

Each takes tensors and returns a scalar; cross-rank reductions go through ``harness.parallel.dist``
(the identity in one process), so the same function is right on one CPU and on 64 GPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.parallel import dist


def moco_v3_contrastive(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """One direction of MoCo-v3: CE(q̂·k̂ᵀ/τ) · 2τ with keys gathered across ranks (no grad).

    The positive of local query i on rank r is gathered key i + N_local·r. The full
    MoCo-v3 loss is the *sum* ``moco_v3_contrastive(q1, k2) + moco_v3_contrastive(q2, k1)``.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(dist.gather(k, grad=False), dim=1)
    logits = q @ k.t() / tau
    labels = torch.arange(q.shape[0], device=q.device) + q.shape[0] * dist.rank()
    return F.cross_entropy(logits, labels) * (2 * tau)


def dino_loss(
    student_out: list[torch.Tensor],
    teacher_out: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO cross-entropy between centred, sharpened teacher and student distributions.

    ``student_out``: per-view logits (global views first, then local);
    ``teacher_out``: per-global-view logits. Pairs of a view with itself are skipped and
    the result is the mean over the remaining pairs. ``center`` is not updated here.
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher_out]
    logps = [F.log_softmax(s / student_temp, dim=-1) for s in student_out]
    total, n = 0.0, 0
    for i, p in enumerate(targets):
        for v, lp in enumerate(logps):
            if v == i:
                continue
            total = total + (-(p * lp).sum(dim=-1)).mean()
            n += 1
    return total / n


def _bn_no_affine(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch normalisation without affine over the global batch (training statistics)."""
    n = z.shape[0] * dist.world_size()
    mean = dist.all_reduce_sum(z.sum(0)) / n
    var = dist.all_reduce_sum(((z - mean) ** 2).sum(0)) / n
    return (z - mean) / torch.sqrt(var + eps)


class _SumOwnShareGrad(torch.autograd.Function):
    """The sum across ranks forward; backward, the gradient reaches only this rank's own
    input (an in-place all_reduce outside autograd, as the public SER code does)."""

    @staticmethod
    def forward(ctx, x):
        return dist.all_reduce_sum(x.detach().clone())

    @staticmethod
    def backward(ctx, grad):
        return grad


def barlow_twins(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, public_grad_scale: bool = False
) -> torch.Tensor:
    """Σ(1−C_ii)² + λ·Σ_{i≠j} C_ij², C = BN(z1)ᵀBN(z2)/B_global summed across ranks.

    ``public_grad_scale``: C's cross-rank sum passes no gradient to the other ranks (the
    public code's in-place all_reduce), so each rank back-propagates only its own share and,
    averaged over W ranks, the gradient is 1/W of the exact one. Same value either way.
    """
    n = z1.shape[0] * dist.world_size()
    local = _bn_no_affine(z1).t() @ _bn_no_affine(z2)
    if public_grad_scale and dist.is_dist():
        c = _SumOwnShareGrad.apply(local) / n
    else:
        c = dist.all_reduce_sum(local) / n
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off


def token_infonce(
    target: torch.Tensor,
    query: torch.Tensor,
    target_image: torch.Tensor,
    query_image: torch.Tensor,
    positive: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Token InfoNCE with same-image negatives removed, for queries against any target set.

    Query j's positive is target row ``positive[j]``; its denominator holds the positive
    and every target token of another image.
    """
    logits = F.normalize(query, dim=1) @ F.normalize(target, dim=1).t() / tau  # Q×T
    same = query_image[:, None] == target_image[None, :]
    keep = ~same
    keep[torch.arange(len(query), device=query.device), positive] = True
    logits = logits.masked_fill(~keep, float("-inf"))
    pos = logits[torch.arange(len(query), device=query.device), positive]
    return (torch.logsumexp(logits, dim=1) - pos).mean()


def ser_token_infonce(
    target: torch.Tensor, query: torch.Tensor, image_index: torch.Tensor, tau: float
) -> torch.Tensor:
    """SER's L_equiv on N×D token features at corresponding positions.

    With s_ij = cos(target_i, query_j): mean over j of
    −log( exp(s_jj/τ) / Σ_{i : i = j or image_index_i ≠ image_index_j} exp(s_ij/τ) ).
    """
    idx = torch.arange(len(query), device=query.device)
    return token_infonce(target, query, image_index, image_index, idx, tau)


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's 2N-way NT-Xent: row i of ``a`` and of ``b`` are positives, every other row of
    [a; b] across ranks is a negative, self-similarity masked; mean over the 2N rows.

    Negatives are gathered with the gradient of the local shard (as EquiMod and E-SSL do).
    """
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n, r = a.shape[0], dist.rank()
    keys = torch.cat([dist.gather(a, grad=True), dist.gather(b, grad=True)])
    big_n = keys.shape[0] // 2
    logits = torch.cat([a, b]) @ keys.t() / tau
    idx = torch.arange(n, device=a.device) + r * n
    own = torch.cat([idx, idx + big_n])
    pos = torch.cat([idx + big_n, idx])
    self_pair = torch.zeros_like(logits, dtype=torch.bool)
    self_pair[torch.arange(2 * n, device=a.device), own] = True
    return F.cross_entropy(logits.masked_fill(self_pair, float("-inf")), pos)


def augself_loss(pred_ab: torch.Tensor, target_ab: torch.Tensor) -> torch.Tensor:
    """AugSelf's regression term: MSE(tanh(prediction), target), mean over all entries."""
    return F.mse_loss(torch.tanh(pred_ab), target_ab)
