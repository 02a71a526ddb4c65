"""View policies: how a list of images becomes a training batch.

A policy fixes how many views there are and what rides along with them:

* ``2view``     — each base method's own two views (spec/methods.md);
* ``paired``    — 2 views, images 2i and 2i+1 share each view's crop and colour draw, so they
                  undergo the same view-1→view-2 transformation (STL);
* ``3view``     — 2 views + the un-augmented image (EquiMod's x0);
* ``multicrop`` — 2 global + 4 local crops, local ones for the online encoder only (the
                  paper's "2+4"); SER's pairs are one global and two local pairs;
* ``rot4``      — 2 views + one small crop in all four 90° rotations (E-SSL; "2+4" in Table 1).

Every policy records each global view's augmentation parameters (``harness.data.augment``).
SER's B2 images (the last ``n_equiv`` of a rank's batch) get, per pair of views, one shared
base crop, two photometric draws and a group element each (spec/ser.md §3–4). A batch is
a pure function of its seed, so a resumed run sees exactly the batches an uninterrupted
one would.

With ``defer`` set (``runtime.gpu_augment``), workers stop after the geometric part: each view
chunk is a dict of uint8 crops, their parameters and what follows the photometric part (SER's
group action, E-SSL's rotations), and ``finish`` renders it batched on the training device.
Parameters are drawn exactly as without it, so the two modes see the same augmentations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from harness.data.augment import BICUBIC, BILINEAR, IDX, Pipeline, clean, encode
from harness.data.photometric import render
from harness.errors import HarnessError
from harness.model import group


@dataclass(frozen=True)
class SSLAugmentation:
    """A base method's two-view SSL augmentation, its class attribute ``augmentation``: the
    global crops' scale and interpolation, the blur and the solarize probability of view 1 and
    view 2 (the rotated and clean inputs share the interpolation; the local crops have their
    own, ``LOCAL_CROPS``)."""

    scale: tuple[float, float]
    interpolation: InterpolationMode
    blur_p: tuple[float, float]
    solarize_p: tuple[float, float]

    def __str__(self) -> str:
        return f"crops {self.scale}, {self.interpolation.value}"


# The 2+4 local crops (``views.local_crops``), 96 px at 224 with the global views' 9×9 blur
# (σ 0.1–2) at p 0.5, jitter p 0.8, flip, no solarize. "ser": SER's loader/local4.py (torchvision's
# default bilinear, no grayscale); "dino": DINO's main_dino.py (bicubic, grayscale p 0.2).
LOCAL_CROPS = {
    "ser": dict(scale=(0.05, 0.25), interpolation=BILINEAR, gray_p=0.0),
    "dino": dict(scale=(0.05, 0.4), interpolation=BICUBIC, gray_p=0.2),
}
LOCAL_SCALE = LOCAL_CROPS["ser"]["scale"]
ROTATED_SCALE = (0.05, 0.14)  # E-SSL's rotation crop: 96 px, bilinear, blur 0.1

POLICIES = {
    "2view": dict(provides=(), n_local=0, label="2"),
    "paired": dict(provides=("paired_transforms",), n_local=0, label="2"),
    "3view": dict(provides=("clean_view",), n_local=0, label="3"),
    "rot4": dict(provides=("rotated_crops",), n_local=0, label="2+4"),
    "multicrop": dict(provides=("local_views",), n_local=4, label="2+4"),
}
ALWAYS = ("two_views", "aug_params")


def local_crops_effect(n: int = 1000) -> str:
    """The departure ``multicrop-local-crops``, measured: ``n`` local-crop draws at 224 px under
    each ``views.local_crops``, their mean and largest share of the image and grayscale rate."""
    img, out = torch.empty(3, 224, 224), []
    with torch.random.fork_rng(devices=[]):
        for name in LOCAL_CROPS:
            torch.manual_seed(0)
            ssl = SSLAugmentation((0.08, 1.0), BILINEAR, (1.0, 0.1), (0.0, 0.2))
            pipe = Augmentations(ssl, 224, 16, local_crops=name).local
            p = torch.stack([pipe.sample(img) for _ in range(n)])
            area = p[:, IDX["height"]] * p[:, IDX["width"]] / 224**2
            gray = p[:, IDX["gray"]].mean()
            out.append(
                f"{name}: mean area {area.mean():.1%} (max {area.max():.1%}), gray {gray:.1%}"
            )
    return "; ".join(out) + f" of the image ({n} draws at 224 px)"


def small_size(img_size: int, patch: int) -> int:
    """96 px at 224, as a whole number (≥ 2) of patches at other scales."""
    return max(2, round(img_size * 96 / 224 / patch)) * patch


@dataclass
class Augmentations:
    """The pipelines of one base method's augmentation at one image size."""

    ssl: SSLAugmentation
    size: int
    patch: int
    crop_min: float | None = None  # presets below 224 px raise the minimum global crop
    flavour: str = "kornia"  # the photometric part's (``views.photometric``, augment.FLAVOURS)
    local_crops: str = "ser"  # the 2+4 local crops' (``views.local_crops``, LOCAL_CROPS)
    globals: tuple = field(init=False)
    local: Pipeline = field(init=False)
    rotated: Pipeline = field(init=False)
    clean: object = field(init=False)

    def __post_init__(self):
        scale, interp = self.ssl.scale, self.ssl.interpolation
        blur_p, sol_p, fl = self.ssl.blur_p, self.ssl.solarize_p, self.flavour
        if self.crop_min is not None:
            scale = (max(scale[0], self.crop_min), scale[1])
        self.globals = tuple(
            Pipeline(self.size, scale, interp, blur_p=blur_p[v], solarize_p=sol_p[v], flavour=fl)
            for v in range(2)
        )
        small = small_size(self.size, self.patch)
        if self.local_crops not in LOCAL_CROPS:
            raise HarnessError(
                f"views.local_crops={self.local_crops}: choose one of {', '.join(LOCAL_CROPS)}"
            )
        local = LOCAL_CROPS[self.local_crops]
        self.local = Pipeline(small, blur_p=0.5, flavour=fl, blur_size=self.size, **local)
        self.rotated = Pipeline(small, ROTATED_SCALE, BILINEAR, blur_p=0.1, flavour=fl)
        self.clean = clean(self.size, interp)


@dataclass
class ViewPolicy:
    name: str
    augs: Augmentations
    equiv: dict | None = None  # SER's {"ratio", "policy", "scale", "aspect", "per_rank"}
    standardise: bool = False  # emit standardised parameter vectors (EquiMod)
    stats: tuple | None = None  # (mean, std) of the parameter vectors, from fit_stats
    defer: bool = False  # leave the photometric part to ``finish`` on the training device

    def __post_init__(self):
        if self.name not in POLICIES:
            raise HarnessError(
                f"unknown view policy '{self.name}'; choose one of: {', '.join(POLICIES)}"
            )

    @property
    def provides(self) -> set[str]:
        return {*ALWAYS, *POLICIES[self.name]["provides"]} | (
            {"equiv_pairs"} if self.equiv else set()
        )

    @property
    def n_local(self) -> int:
        return POLICIES[self.name]["n_local"]

    @property
    def equiv_views(self) -> list[tuple[int, int]]:
        """Pairs of views that SER relates by a group element: one global, then local pairs."""
        return [(0, 1)] + [(2 + 2 * i, 3 + 2 * i) for i in range(self.n_local // 2)]

    def n_equiv(self, local_batch: int) -> int:
        if not self.equiv:
            return 0
        r = self.equiv["ratio"]
        n = round(r * local_batch)
        if n < 2:
            fits = next((x for x in _RATIOS if 2 <= round(x * local_batch) < local_batch), None)
            batch = next(b for b in range(local_batch, 1 << 20) if round(r * b) >= 2)
            raise HarnessError(
                f"SER's equivariance subset has {n} image(s) per rank (r={r}, batch "
                f"{local_batch}); it needs ≥ 2: "
                + (f"use '+ser@r{fits}' or " if fits else "")
                + f"a per-rank batch of at least {batch}"
            )
        if n >= local_batch:
            raise HarnessError(
                f"SER's equivariance subset takes all {local_batch} image(s) of a rank's batch "
                f"(r={r}), leaving none for the base method's views: use a smaller @r or a "
                f"larger batch"
            )
        return n

    def sample_elements(self, gen: torch.Generator, n: int) -> list[tuple[list, list]]:
        """Group elements (g_a, g_b) for each pair of ``equiv_views``, ``n`` images each."""
        sampler = group.POLICIES[self.equiv["policy"]]
        out = []
        for a, _ in self.equiv_views:
            size = self.augs.size if a < 2 else self.augs.local.size
            grid = (size // self.augs.patch,) * 2
            out.append(sampler(gen, n, grid, self.equiv["scale"], self.equiv["aspect"]))
        return out

    def fit_stats(self, sizes: list[tuple[int, int]], n: int = 4096) -> None:
        """Mean and std of the parameter vectors on this dataset's image sizes (EquiMod
        standardises with dataset constants; these are them, for any dataset)."""
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
            # The jitter strengths drawn from: AugSelf normalises its colour targets by them.
            batch["jitter"] = tuple(self.augs.globals[0].jitter)
            if self.standardise and self.stats is not None:
                mean, std = self.stats
                batch["params_z"] = [(p - mean) / std for p in params]
            if self.name == "3view":
                batch["clean"] = torch.stack([self.augs.clean(im) for im in b1])
            if self.name == "rot4":
                pipe = self.augs.rotated
                p = _chunk_order(pipe, [pipe.sample(im) for im in b1])
                crops = self._views(pipe, b1, p, then=("rot4",))
                batch["rotated"] = crops if self.defer else _rot4(crops)
                batch["rot_labels"] = torch.arange(4).repeat_interleave(len(b1))
            if n2:
                batch["equiv"] = {"chunk": 1, "pairs": self._equiv_pairs(views, b2, elements)}
        return batch

    def _views(self, pipe: Pipeline, images: list, params: list, then=(), cropped=False):
        """One chunk of a view: rendered, or (``defer``) uint8 crops and what ``finish`` needs;
        ``cropped`` images (SER's shared base crops) only get the photometric part."""
        if not self.defer:
            return torch.stack([pipe.apply(im, p) for im, p in zip(images, params)])
        if cropped:
            crops = [F.pil_to_tensor(im) for im in images]
        else:
            crops = [pipe.crop_uint8(im, p) for im, p in zip(images, params)]
        return {
            "crops": torch.stack(crops),
            "params": torch.stack(params),
            "blur": pipe.kernel,
            "flavour": pipe.flavour,
            "then": then,
        }

    def _global_params(self, pipe: Pipeline, images: list) -> list[torch.Tensor]:
        if self.name != "paired":
            return [pipe.sample(im) for im in images]
        if len(images) % 2:
            raise HarnessError(
                f"view policy 'paired' (STL) pairs images 2i and 2i+1, but a "
                f"rank's batch has {len(images)} of them: use an even batch per rank"
            )
        out = []
        for im in images[::2]:
            p = pipe.sample(im)
            out += [p, pipe.resample_per_image(p)]
        return out

    def _equiv_pairs(self, views: list, b2: list, elements) -> list:
        pairs = []
        for (a, b), (g_a, g_b) in zip(self.equiv_views, elements):
            crop = self.augs.globals[0] if a < 2 else self.augs.local
            # SER's erl_local4 renders every 2+4 B2 view, the global pair's too, with
            # local4.py's photometric part (its ``etc``: jitter, blur p 0.5, no grayscale).
            pipes = (self.augs.local,) * 2 if self.n_local else self.augs.globals
            bases = [crop.crop(im, encode(crop.sample_geometric(im, {}))) for im in b2]
            for v, pipe, g in ((a, pipes[0], g_a), (b, pipes[1], g_b)):
                p = _chunk_order(pipe, [encode(pipe.sample_photometric({})) for _ in bases])
                if self.defer:
                    act = ("act", g, self.augs.patch)
                    views[v].append(self._views(pipe, bases, p, then=act, cropped=True))
                else:
                    x = torch.stack([pipe.photometric(im, q) for im, q in zip(bases, p)])
                    views[v].append(group.act_each(x, g, unit=self.augs.patch))
            pairs.append((a, b, g_a, g_b))
        return pairs


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


def _rot4(crops: torch.Tensor) -> torch.Tensor:
    # Label k ⇔ torch.rot90(crop, k): every crop in all four rotations.
    return torch.cat([torch.rot90(crops, k, dims=(-2, -1)) for k in range(4)])


def finish(batch: dict, device=None) -> dict:
    """Render a deferred batch on ``device`` (default: where its crops lie): each chunk's
    photometric part batched, then what follows it. A chunk's parameters stay on the host,
    which steers the ops without reading anything back from the device. A batch rendered in
    the workers passes through."""

    def done(chunk):
        if not isinstance(chunk, dict):
            return chunk
        crops = chunk["crops"] if device is None else chunk["crops"].to(device, non_blocking=True)
        x = render(crops, chunk["params"], chunk["blur"], flavour=chunk["flavour"])
        then = chunk["then"]
        if then and then[0] == "act":
            return group.act_each(x, then[1], unit=then[2])
        return _rot4(x) if then else x

    batch["views"] = [[done(c) for c in chunks] for chunks in batch["views"]]
    if "rotated" in batch:
        batch["rotated"] = done(batch["rotated"])
    return batch


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
