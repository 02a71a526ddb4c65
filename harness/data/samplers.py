"""Repeated augmentation (Hoffer et al. 2020) as DeiT's ``RASampler`` draws it, in one process.

DeiT's rule (facebookresearch/deit@7e160fe samplers.py ``RASampler``), for ``n`` images,
``num_repeats`` R and W replicas: in epoch e, ``randperm(n)`` from a generator seeded with e;
every index repeated R times in place (``repeat_interleave``: a a a b b b …), padded to a
multiple of W; replica r takes every W-th entry from r and keeps its first
``floor(n // 256 * 256 / W)`` (``num_selected_samples``). DeiT's global batch t is then the
entries ``[t·B, (t+1)·B)`` of the repeated list (B = W·b; replica r holds entries r, r + W, …),
so one process taking contiguous batches of B from that list's first ``n // 256 * 256``
entries sees DeiT's global batches (as sets), whatever W; the repeats of an image share a
global batch, on different GPUs in DeiT.

Two choices of the harness: the generator is seeded with ``seed + epoch`` (DeiT: ``epoch``,
the same at ``seed`` 0, as torch's DistributedSampler adds its seed); a set of fewer than 256
images keeps all of them (DeiT's rule would select none and train nothing).

With ``keys`` the sampler yields ``r·n + i`` for repeat r of image i instead of i, so an
augmentation seeded per item (``SeededDraws`` over ``Repeats``) draws a different augmentation
for each repeat; repeat 0 of image i is item i, as in a plain epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

# DeiT rounds the epoch down to a multiple of 256 images (num_selected_samples).
ROUND = 256


def selected(n: int) -> int:
    """Samples per epoch for ``n`` images in one process: DeiT's ``n // 256 * 256``, or ``n``
    for a set smaller than 256 (DeiT's rule gives 0 there)."""
    return n // ROUND * ROUND if n >= ROUND else n


class RepeatedAugSampler(Sampler[int]):
    """DeiT's RASampler for one replica: ``selected(n)`` entries of the seeded, shuffled list of
    indices each repeated ``num_repeats`` times in place. ``set_epoch`` before each pass."""

    def __init__(self, n: int, num_repeats: int = 3, seed: int = 0, keys: bool = False):
        if num_repeats < 1:
            raise ValueError("num_repeats should be greater than 0")
        self.n, self.num_repeats, self.seed, self.keys = int(n), int(num_repeats), seed, keys
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """This epoch's image indices (with repeats, before keys)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        return torch.repeat_interleave(perm, self.num_repeats)[: len(self)]

    def __iter__(self):
        idx = self.order()
        if self.keys:
            repeat = torch.arange(len(idx)) % self.num_repeats
            idx = repeat * self.n + idx
        return iter(idx.tolist())

    def __len__(self) -> int:
        return selected(self.n)


class Repeats(Dataset):
    """``dataset`` listed ``repeats`` times: item ``r·n + i`` is ``dataset[i]``."""

    def __init__(self, dataset, repeats: int):
        self.dataset, self.repeats, self.n = dataset, int(repeats), len(dataset)

    def __len__(self) -> int:
        return self.n * self.repeats

    def __getitem__(self, k):
        return self.dataset[int(k) % self.n]
