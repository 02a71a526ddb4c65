"""Training batches: a method's view policy, and item i = this rank's share of global step i,
a pure function of (seed, step, rank) so a resumed run sees the batches an uninterrupted one
would."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset

from harness.data import addon_views
from harness.data.views import Augmentations, ViewPolicy, check_requirements
from harness.errors import HarnessError
from harness.parallel import dist


def build_policy(method, cfg: dict) -> ViewPolicy:
    """The view policy of a built method: its base's ``augmentation``, its add-ons' views."""
    views = cfg.get("views", {})
    augs = Augmentations(
        method.augmentation,
        cfg["model"]["img_size"],
        cfg["model"]["patch_size"],
        views.get("crop_min"),
        views.get("photometric", "kornia"),
        views.get("local_crops", "ser"),
    )
    # The add-on's own loader as the public SER code configures it (views.addon_data=ser;
    # absent from configs written before the setting: those runs had the base's views).
    stats = addon_views.configure(
        augs, [a.name for a in method.addons], views.get("addon_data", "base")
    )
    requests = [a.view_request(augs) for a in method.addons]
    equiv = [r.equiv_pairs for r in requests if r.equiv_pairs is not None]
    policy = ViewPolicy(
        views.get("policy", "2view"),
        augs,
        equiv[-1] if equiv else None,
        standardise=any(r.standardise_params for r in requests),
        stats=stats,
        extra=tuple(v for r in requests for v in r.extra),
    )
    for a in method.addons:
        check_requirements(cfg["method"], a.requires, policy)
    return policy


def derive_seed(*parts) -> int:
    """A stable 62-bit seed from ints/strings (Python's hash() is salted per process)."""
    digest = hashlib.sha1(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


class PretrainBatches(Dataset):
    """Item i is this rank's share of global step i's batch, built from its own seed."""

    def __init__(
        self,
        images: Dataset,
        policy: ViewPolicy,
        global_batch: int,
        seed: int,
        skip_bad: bool = False,
    ):
        self.images, self.policy, self.seed = images, policy, seed
        # ``data.skip_bad``: an image that does not decode is replaced by the next one in the
        # dataset (the same one on every run, so a resumed run sees the same batches) and
        # named in the batch's "skipped" list, which the loop logs. Off: it stops the run.
        self.skip_bad = skip_bad
        self.global_batch = global_batch
        # Fixed here: loader workers must not query torch.distributed themselves.
        self.rank, self.world = dist.rank(), dist.world_size()
        self.local_batch = global_batch // self.world
        self.steps_per_epoch = len(images) // global_batch
        self.n_equiv = policy.n_equiv(self.local_batch)
        if policy.standardise and policy.stats is None:  # not fixed by the add-on's loader
            probe = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:64]
            policy.fit_stats([self._image(int(i), []).size for i in probe])

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's image order, drawn once per epoch in each process (a permutation of
        1.28M indices takes ~12 ms: not something to redo every step)."""
        cached = getattr(self, "_order", None)
        if cached is None or cached[0] != epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._order = cached = (epoch, torch.randperm(len(self.images), generator=gen))
        return cached[1]

    def __getitem__(self, step: int) -> dict:
        epoch, b = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        start = b * self.global_batch + self.rank * self.local_batch
        idx = order[start : start + self.local_batch].tolist()
        skipped: list[str] = []
        images = [self._image(i, skipped) for i in idx]
        elements = None
        if self.n_equiv and self.policy.equiv.per_rank:
            # As the public code: each rank its own generator, so its own grids and 90°
            # rotations (SER gathers token sets of different sizes).
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "group", step, self.rank))
            elements = self.policy.sample_elements(gen, self.n_equiv)
        elif self.n_equiv:
            # ``@shared_grid``: one draw per global step, this rank's slice of it.
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "group", step))
            lo, hi = self.rank * self.n_equiv, (self.rank + 1) * self.n_equiv
            elements = [
                (ga[lo:hi], gb[lo:hi])
                for ga, gb in self.policy.sample_elements(gen, self.n_equiv * self.world)
            ]
        batch = self.policy(images, derive_seed(self.seed, "views", step, self.rank), elements)
        if skipped:
            batch["skipped"] = skipped
        return batch

    def _image(self, i: int, skipped: list[str]):
        if not self.skip_bad:
            return self.images[i][0]
        n = len(self.images)
        for k in range(n):
            try:
                return self.images[(i + k) % n][0]
            except HarnessError:  # load_rgb's one line: this file does not decode
                skipped.append(self.images.samples[(i + k) % n][0])
        raise HarnessError(
            f"no image of the {n} in the training set decodes: check the tree with "
            "`harness data check imagenet --root PATH`"
        )

    def __len__(self) -> int:
        return 1 << 62


def to_device(obj, device):
    """Every tensor of a batch (nested in dicts, lists and tuples) onto ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
