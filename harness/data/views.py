"""View policies: how a list of images becomes a training batch.

A policy fixes how many views there are, how many of them reach the base method's
``invariance_loss`` (``n_views``) and what rides along with them (``POLICY_CLASSES``):
two views; two views shared by neighbouring images (``paired``); two views and the
un-augmented image (``3view``); two global and four local crops (``multicrop``, locals for the
online encoder only); two views and one small crop in all four 90° rotations (``rot4``).

Every policy records each global view's augmentation parameters (``harness.data.augment``).
What an add-on needs beyond that it declares (``harness.data.requests``): equivariance pairs on
the last share of a rank's batch (one shared base crop, two photometric draws and a group
element each), standardised parameter vectors, or kinds of view of its own. A batch is a pure
function of its seed, so a resumed run sees exactly the batches an uninterrupted one would.

With ``defer`` set (``runtime.gpu_augment``), workers stop after the geometric part and hand
over ``harness.data.deferred`` chunks, rendered batched on the training device.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

import torch
from torchvision.transforms import functional as F

from harness.data.augment import IDX, Pipeline, encode
from harness.data.deferred import DeferredChunk, GroupAction, rot4
from harness.data.pipelines import Augmentations
from harness.data.requests import EquivPairs, ExtraView
from harness.errors import HarnessError
from harness.model import group


@dataclass
class ViewPolicy:
    """How a rank's images become a batch. ``ViewPolicy(name, …)`` gives the class of that
    name (``POLICY_CLASSES``); each class fixes ``n_views``, the number of views it hands to
    ``invariance_loss`` (global first, then local), and checks every batch against it."""

    name: str
    augs: Augmentations
    equiv: EquivPairs | None = None
    standardise: bool = False  # emit standardised parameter vectors
    stats: tuple | None = None  # (mean, std) of the parameter vectors, from fit_stats
    defer: bool = False  # leave the photometric part to ``finish`` on the training device
    extra: tuple[ExtraView, ...] = ()  # the add-ons' own kinds of view

    # What the policy provides beside ``ALWAYS``, its local crops and its table label.
    provides: tuple[str, ...] = field(default=(), init=False, repr=False)
    n_local: int = field(default=0, init=False, repr=False)
    label: str = field(default="2", init=False, repr=False)

    def __new__(cls, *args, **kwargs):
        if cls is ViewPolicy:
            name = args[0] if args else kwargs.get("name")
            if name not in POLICY_CLASSES:
                raise HarnessError(
                    f"unknown view policy '{name}'; choose one of: {', '.join(POLICY_CLASSES)}"
                )
            cls = POLICY_CLASSES[name]
        return object.__new__(cls)

    @property
    def n_views(self) -> int:
        """Views handed to ``invariance_loss``: the two global ones and the local crops."""
        return 2 + self.n_local

    @property
    def offers(self) -> set[str]:
        return {*ALWAYS, *self.provides} | ({"equiv_pairs"} if self.equiv else set())

    @property
    def equiv_views(self) -> list[tuple[int, int]]:
        """Pairs of views related by a group element: one global, then local pairs."""
        return [(0, 1)] + [(2 + 2 * i, 3 + 2 * i) for i in range(self.n_local // 2)]

    def n_equiv(self, local_batch: int) -> int:
        if not self.equiv:
            return 0
        r, mod = self.equiv.ratio, self.equiv.modifier
        n = round(r * local_batch)
        if n < 2:
            fits = next((x for x in _RATIOS if 2 <= round(x * local_batch) < local_batch), None)
            batch = next(b for b in range(local_batch, 1 << 20) if round(r * b) >= 2)
            raise HarnessError(
                f"the equivariance subset has {n} image(s) per rank (r={r}, batch "
                f"{local_batch}); it needs ≥ 2: "
                + (f"use '{mod}{fits}' or " if fits else "")
                + f"a per-rank batch of at least {batch}"
            )
        if n >= local_batch:
            raise HarnessError(
                f"the equivariance subset takes all {local_batch} image(s) of a rank's batch "
                f"(r={r}), leaving none for the base method's views: use a smaller {mod} or a "
                f"larger batch"
            )
        return n

    def sample_elements(self, gen: torch.Generator, n: int) -> list[tuple[list, list]]:
        """Group elements (g_a, g_b) for each pair of ``equiv_views``, ``n`` images each."""
        sampler = group.POLICIES[self.equiv.policy]
        out = []
        for a, _ in self.equiv_views:
            size = self.augs.size if a < 2 else self.augs.local.size
            grid = (size // self.augs.patch,) * 2
            out.append(sampler(gen, n, grid, self.equiv.scale, self.equiv.aspect))
        return out

    def fit_stats(self, sizes: list[tuple[int, int]], n: int = 4096) -> None:
        """Mean and std of the parameter vectors on this dataset's image sizes (dataset
        constants to standardise with, for any dataset)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pick = random.Random(0)
            draws = []
            for i in range(n):
                w, h = pick.choice(sizes)
                draws.append(self.augs.globals[i % 2].sample(torch.empty(3, h, w)))
        p = torch.stack(draws)
        self.stats = (p.mean(0), p.std(0).clamp_min(1e-6))

    def __call__(self, images: list, seed: int, elements=None) -> dict:
        """One rank's batch; ``elements`` = per ``equiv_views`` pair, (g_a, g_b) lists."""
        n2 = len(elements[0][0]) if elements else 0
        b1, b2 = images[: len(images) - n2], images[len(images) - n2 :]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views, params = [], []
            for pipe in self.augs.globals:
                p = _chunk_order(pipe, self._global_params(pipe, b1))
                views.append([self._views(pipe, b1, p)])
                params.append(torch.stack(p))
            pipe = self.augs.local
            for _ in range(self.n_local):
                p = _chunk_order(pipe, [pipe.sample(im) for im in b1])
                views.append([self._views(pipe, b1, p)])
            batch = {"views": views, "n_global": 2, "params": params}
            # The jitter strengths drawn from (colour targets are normalised by them).
            batch["jitter"] = tuple(self.augs.globals[0].jitter)
            if self.standardise and self.stats is not None:
                mean, std = self.stats
                batch["params_z"] = [(p - mean) / std for p in params]
            self._inputs(b1, batch)
            if n2:
                batch["equiv"] = {"chunk": 1, "pairs": self._equiv_pairs(views, b2, elements)}
            if self.extra:
                batch["extra"], batch["extra_params"] = {}, {}
                for view in self.extra:
                    pipe = view.pipeline
                    p = _chunk_order(pipe, [pipe.sample(im) for im in b1])
                    batch["extra"][view.name] = self._views(pipe, b1, p)
                    batch["extra_params"][view.name] = torch.stack(p)
        assert len(views) == self.n_views, (self.name, len(views), self.n_views)
        return batch

    def _inputs(self, images: list, batch: dict) -> None:
        """The policy's inputs beside the views (none here)."""

    def _views(self, pipe: Pipeline, images: list, params: list, then=None, cropped=False):
        """One chunk of a view: rendered, or (``defer``) a ``DeferredChunk`` of uint8 crops;
        ``cropped`` images (shared base crops) only get the photometric part."""
        if not self.defer:
            return torch.stack([pipe.apply(im, p) for im, p in zip(images, params)])
        if cropped:
            crops = [F.pil_to_tensor(im) for im in images]
        else:
            crops = [pipe.crop_uint8(im, p) for im, p in zip(images, params)]
        return DeferredChunk(
            torch.stack(crops), torch.stack(params), pipe.kernel, pipe.flavour, then
        )

    def _global_params(self, pipe: Pipeline, images: list) -> list[torch.Tensor]:
        return [pipe.sample(im) for im in images]

    def _equiv_pairs(self, views: list, b2: list, elements) -> list:
        pairs = []
        for (a, b), (g_a, g_b) in zip(self.equiv_views, elements):
            crop = self.augs.globals[0] if a < 2 else self.augs.local
            # With local crops every B2 view, the global pair's too, takes the local crops'
            # photometric part (jitter, blur p 0.5, no grayscale), as the public 2+4 code.
            pipes = (self.augs.local,) * 2 if self.n_local else self.augs.globals
            bases = [crop.crop(im, encode(crop.sample_geometric(im, {}))) for im in b2]
            for v, pipe, g in ((a, pipes[0], g_a), (b, pipes[1], g_b)):
                p = _chunk_order(pipe, [encode(pipe.sample_photometric({})) for _ in bases])
                act = GroupAction(g, self.augs.patch)
                if self.defer:
                    views[v].append(self._views(pipe, bases, p, then=act, cropped=True))
                else:
                    x = torch.stack([pipe.photometric(im, q) for im, q in zip(bases, p)])
                    views[v].append(act(x))
            pairs.append((a, b, g_a, g_b))
        return pairs


@dataclass
class TwoViews(ViewPolicy):
    """``2view``: the base method's two views; 2 reach ``invariance_loss``."""


@dataclass
class PairedViews(ViewPolicy):
    """``paired``: 2 views (both reach ``invariance_loss``); images 2i and 2i+1 share each
    view's crop and colour draw, so they undergo the same view-1→view-2 transformation."""

    provides: tuple[str, ...] = field(default=("paired_transforms",), init=False, repr=False)

    def _global_params(self, pipe: Pipeline, images: list) -> list[torch.Tensor]:
        if len(images) % 2:
            raise HarnessError(
                f"view policy 'paired' pairs images 2i and 2i+1, but a "
                f"rank's batch has {len(images)} of them: use an even batch per rank"
            )
        out = []
        for im in images[::2]:
            p = pipe.sample(im)
            out += [p, pipe.resample_per_image(p)]
        return out


@dataclass
class CleanView(ViewPolicy):
    """``3view``: 2 views (both reach ``invariance_loss``) + the un-augmented image, which
    the online backbone encodes as ``batch["encoded"]["clean"]``."""

    provides: tuple[str, ...] = field(default=("clean_view",), init=False, repr=False)
    label: str = field(default="3", init=False, repr=False)

    def _inputs(self, images: list, batch: dict) -> None:
        batch["clean"] = torch.stack([self.augs.clean(im) for im in images])


@dataclass
class RotatedCrops(ViewPolicy):
    """``rot4``: 2 views (both reach ``invariance_loss``) + one small crop per image in all
    four 90° rotations, labelled by rotation (``batch["encoded"]["rotated"]``)."""

    provides: tuple[str, ...] = field(default=("rotated_crops",), init=False, repr=False)
    label: str = field(default="2+4", init=False, repr=False)

    def _inputs(self, images: list, batch: dict) -> None:
        pipe = self.augs.rotated
        p = _chunk_order(pipe, [pipe.sample(im) for im in images])
        crops = self._views(pipe, images, p, then=rot4)
        batch["rotated"] = crops if self.defer else rot4(crops)
        batch["rot_labels"] = torch.arange(4).repeat_interleave(len(images))


@dataclass
class MultiCrop(ViewPolicy):
    """``multicrop``: 2 global + 4 local crops, all 6 reach ``invariance_loss`` (global
    first); only the global ones reach the target network."""

    provides: tuple[str, ...] = field(default=("local_views",), init=False, repr=False)
    n_local: int = field(default=4, init=False, repr=False)
    label: str = field(default="2+4", init=False, repr=False)


POLICY_CLASSES: dict[str, type[ViewPolicy]] = {
    "2view": TwoViews,
    "paired": PairedViews,
    "3view": CleanView,
    "rot4": RotatedCrops,
    "multicrop": MultiCrop,
}


def _described(cls: type[ViewPolicy]) -> dict:
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    n_local = fields["n_local"]
    return dict(
        provides=fields["provides"], n_local=n_local, label=fields["label"], n_views=2 + n_local
    )


# Each policy as a plain description: what it provides, its local crops, its table label and
# the views it hands to ``invariance_loss``.
POLICIES = {name: _described(cls) for name, cls in POLICY_CLASSES.items()}
ALWAYS = ("two_views", "aug_params")


# SER ratios suggested when a rank's batch is too small for the one asked for.
_RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5)


_ORDER = [IDX[f"order{k}"] for k in range(4)]


def _chunk_order(pipe: Pipeline, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """kornia's ColorJiggle draws one jitter order per call, and the public code calls it once
    per view chunk: every jittered image of the chunk takes the first one's order (drawn, like
    every image's, uniformly over the 24)."""
    if pipe.flavour not in ("kornia", "augself"):  # augself: SER's kornia 0.4.1 ColorJitter
        return params
    jittered = [p for p in params if p[IDX["jitter"]] > 0]
    for p in jittered[1:]:
        p[_ORDER] = jittered[0][_ORDER]
    return params


def choose(requires, explicit: str | None = None) -> str:
    """The view policy for a method: the one named, or the first that supplies everything."""
    need = set(requires) - set(ALWAYS) - {"equiv_pairs"}
    if explicit:
        return explicit
    for name, p in POLICIES.items():
        if need <= set(p["provides"]):
            return name
    raise HarnessError(
        f"no view policy provides all of {sorted(need)}: these add-ons cannot be combined"
    )


def check_requirements(method_name: str, requires, policy: ViewPolicy) -> None:
    require_policy(method_name, requires, policy.name)


def require_policy(method_name: str, requires, policy_name: str) -> None:
    """One line naming the policy that would work when ``policy_name`` lacks what the
    add-ons need (every policy provides two views and their parameters)."""
    if policy_name not in POLICIES:
        raise HarnessError(
            f"unknown view policy '{policy_name}' for '{method_name}': one of {', '.join(POLICIES)}"
        )
    provides = set(ALWAYS) | set(POLICIES[policy_name]["provides"]) | {"equiv_pairs"}
    missing = set(requires) - provides
    if not missing:
        return
    fits = [n for n in POLICIES if missing - {"equiv_pairs"} <= set(POLICIES[n]["provides"])]
    base = method_name.split("+")[0].split("@")[0]
    rest = method_name[len(method_name.split("+")[0]) :]
    hint = f": use '@{fits[0]}' ({base}@{fits[0]}{rest})" if fits else ""
    raise HarnessError(
        f"method '{method_name}' needs view inputs {sorted(missing)} that view "
        f"policy '{policy_name}' does not provide{hint}"
    )
