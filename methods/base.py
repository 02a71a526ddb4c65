"""The base classes: a ``Method`` owns the networks and one training step; an ``AddOn``
changes the backbone layout, asks the views for extra inputs and adds loss terms.

A base method (MoCo-v3, DINO, Barlow Twins) is one class: its ``augmentation``, its paper
``recipe``, its head widths at paper scale (class attributes, built through ``self.width``,
which applies the preset's ``width_factor``) and a few hooks: ``build_heads``,
``build_target``, ``invariance_loss`` and, where it has them, ``before_step`` /
``after_step`` / ``clip_gradients``. The training loop in ``harness.train`` only calls
``training_step``, ``before_step``, ``after_step``, ``clip_gradients``, ``param_groups``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn

from harness.data.pipelines import Augmentations, SSLAugmentation
from harness.data.requests import ViewRequest
from harness.errors import HarnessError
from harness.model.backbone import Backbone, BackboneConfig
from harness.schedule import Progress

# Extra inputs a view policy may add beside the SSL views; encoded by the online backbone.
EXTRA_INPUTS = ("clean", "rotated")
MIN_WIDTH = 16  # no head narrower than this, however small the preset


def scaled_width(paper_width: int, width_factor: float) -> int:
    """A head width at a preset's scale: the paper's width × ``width_factor``, at least 16."""
    return max(MIN_WIDTH, round(paper_width * width_factor))


@dataclass(frozen=True)
class Recipe(Mapping):
    """A base method's paper-scale optimisation recipe: the entries every method needs, typed,
    and its own ones (``options``). It reads as the mapping it was given, in the same order,
    so the resolved config (and its hash) is the dict the class wrote."""

    base_lr: float
    weight_decay: float
    warmup_epochs: float
    options: dict = field(default_factory=dict)
    order: tuple[str, ...] = ()

    @classmethod
    def of(cls, method: str, entries) -> Recipe:
        """``entries`` checked: a missing or non-numeric required entry is one line."""
        if isinstance(entries, Recipe):
            return entries
        entries = dict(entries)
        for key in RECIPE_REQUIRED:
            if key not in entries:
                raise HarnessError(
                    f"base method '{method}' has no recipe['{key}']: add it to the class's "
                    f"recipe (required: {', '.join(RECIPE_REQUIRED)})"
                )
            v = entries[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise HarnessError(
                    f"base method '{method}' sets recipe['{key}'] = {v!r}: give a number"
                )
        rest = {k: v for k, v in entries.items() if k not in RECIPE_REQUIRED}
        return cls(*(entries[k] for k in RECIPE_REQUIRED), rest, tuple(entries))

    def __getitem__(self, key: str):
        if key in RECIPE_REQUIRED:
            return getattr(self, key)
        return self.options[key]

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


RECIPE_REQUIRED = ("base_lr", "weight_decay", "warmup_epochs")


@dataclass
class Encoded:
    """One view's backbone outputs: [CLS] over all chunks, token taps per chunk."""

    cls: torch.Tensor
    tokens: list  # per chunk: {layer: B×D×h×w}
    sizes: list  # images per chunk


class AddOn(nn.Module):
    """An equivariance add-on composed with a base method by name (``base+addon``).

    ``@layerK`` (the layer-decoupling recipe) means the same for every add-on: its feature
    is the LayerNorm'd, mean-pooled token map after block K instead of the final [CLS], and
    the [CLS] is inserted after block K, as SER does.
    """

    name = "addon"
    # Bump when what the add-on computes changes: runs keyed by the old value are not reused.
    version = 1
    description = ""
    modifier_help = "@layerK"
    # What the views must provide; the view policy is checked against it.
    requires: tuple[str, ...] = ()
    # The preset's head-width factor, set by the method before ``attach``.
    width_factor: float = 1.0

    def __init__(self, base_name: str, layer: int | None = None, **opts):
        super().__init__()
        self.base_name = base_name
        self.layer = layer

    def width(self, paper_width: int) -> int:
        """A head width given at paper scale, at this run's scale."""
        return scaled_width(paper_width, self.width_factor)

    @classmethod
    def parse_modifier(cls, token: str) -> dict | None:
        m = re.fullmatch(r"layer(\d+)", token)
        return {"layer": int(m.group(1))} if m else None

    def configure_backbone(self, cfg: BackboneConfig) -> BackboneConfig:
        if self.layer is None:
            return cfg
        if not 1 <= self.layer <= cfg.depth:
            raise HarnessError(
                f"{self.name}@layer{self.layer} is outside the backbone's blocks "
                f"1…{cfg.depth}: pick @layerK with K in that range"
            )
        if cfg.cls_layer not in (None, self.layer):
            raise HarnessError(
                f"{self.name}@layer{self.layer} needs the [CLS] after block "
                f"{self.layer}, another add-on put it after block {cfg.cls_layer}: "
                f"give both the same @layerK"
            )
        return replace(cfg, cls_layer=self.layer, equiv_layer=self.layer)

    def taps(self) -> set[int]:
        return {self.layer} if self.layer else set()

    def feature(self, enc: Encoded, chunk: int = 0) -> torch.Tensor:
        """The add-on's per-image feature of one chunk: final [CLS] or pooled layer-K map."""
        if self.layer:
            return enc.tokens[chunk][self.layer].mean(dim=(2, 3))
        start = sum(enc.sizes[:chunk])
        return enc.cls[start : start + enc.sizes[chunk]]

    def attach(self, method: Method) -> None:
        """Create the add-on's own heads once the base method's networks exist (their widths
        at paper scale through ``self.width``)."""

    def view_request(self, augs: Augmentations) -> ViewRequest:
        """What the add-on needs of the views beyond its ``requires``: equivariance pairs,
        standardised parameters, kinds of view of its own (``ExtraView``s, built on the run's
        ``augs``: its size, patch and photometric flavour)."""
        return ViewRequest()

    def losses(
        self,
        method: Method,
        batch: dict,
        online: list[Encoded],
        target: list[Encoded] | None,
        progress: Progress,
    ) -> dict[str, torch.Tensor]:
        return {}


class Method(nn.Module):
    name = "base"
    # Bump when what the method computes changes: runs keyed by the old value are not reused.
    version = 1
    description = ""
    # The two-view SSL augmentation (crop scale, interpolation, blur / solarize p per view).
    augmentation: SSLAugmentation | None = None
    has_target = False  # a momentum / teacher network
    # Paper-scale optimisation recipe; presets override scale-dependent entries. A dict in
    # the class; registration checks it and makes it a ``Recipe``.
    recipe: Mapping = {}
    # How many views ``invariance_loss`` accepts (``online``: global views first, then local;
    # each view policy's ``n_views``, harness.data.views). Two unless the method says more: a
    # policy handing it another number is refused when the config is resolved.
    invariance_views: tuple[int, ...] = (2,)

    def __init__(
        self,
        backbone_cfg: BackboneConfig,
        recipe: dict,
        addons: list[AddOn] = (),
        width_factor: float = 1.0,
    ):
        super().__init__()
        self.recipe = dict(recipe)
        self.width_factor = width_factor
        self.addons = nn.ModuleList(addons)
        self.backbone = Backbone(backbone_cfg)
        self.build_heads()
        for a in self.addons:
            a.width_factor = width_factor
            a.attach(self)
        self.build_target()

    def width(self, paper_width: int) -> int:
        """A head width given at paper scale, at this run's scale."""
        return scaled_width(paper_width, self.width_factor)

    # ---- hooks -------------------------------------------------------------------------
    @classmethod
    def backbone_options(cls) -> dict:
        return {}

    def build_heads(self) -> None:
        """Create the heads, widths at paper scale through ``self.width``."""
        raise NotImplementedError

    def build_target(self) -> None:
        """Create momentum / teacher copies (after heads and add-on heads exist)."""

    def invariance_loss(
        self, online: list[Encoded], target: list[Encoded] | None, progress: Progress
    ) -> torch.Tensor:
        raise NotImplementedError

    def before_step(self, progress: Progress) -> None:
        pass

    def after_step(self, progress: Progress) -> None:
        pass

    def clip_gradients(self, progress: Progress) -> None:
        clip = self.recipe.get("clip")
        if clip:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip)

    def param_groups(self) -> list[dict]:
        """AdamW groups; ``lr_scale`` multiplies the scheduled lr, ``wd`` is the decay."""
        return [
            {
                "params": self.trainable_parameters(),
                "lr_scale": 1.0,
                "weight_decay": self.recipe.get("weight_decay", 0.0),
            }
        ]

    def weight_decay(self, progress: Progress, group: dict) -> float:
        return group["weight_decay"]

    # ---- shared machinery ----------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def taps(self) -> set[int]:
        return set().union(*(a.taps() for a in self.addons)) if len(self.addons) else set()

    def frozen_copy(self, module: nn.Module, **backbone_changes) -> nn.Module:
        """A gradient-free copy (momentum encoder, teacher) starting from ``module``."""
        if isinstance(module, Backbone) and backbone_changes:
            twin = Backbone(replace(module.cfg, **backbone_changes))
            twin.load_state_dict(module.state_dict())
        else:
            twin = copy.deepcopy(module)
        for p in twin.parameters():
            p.requires_grad_(False)
        return twin

    def eval_backbone(self) -> Backbone:
        """The encoder that evaluations probe (DINO: the teacher, as DINO evaluates)."""
        return self.backbone

    @staticmethod
    def encode_views(
        backbone: Backbone, views: list[list[torch.Tensor]], taps: set[int]
    ) -> list[Encoded]:
        """Encode views given as chunks; crops of one size share a single backbone call."""
        by_shape: dict = {}
        for v, chunks in enumerate(views):
            for c, x in enumerate(chunks):
                by_shape.setdefault(tuple(x.shape[1:]), []).append((v, c, x))
        outs = {}
        for items in by_shape.values():
            o = backbone(torch.cat([x for _, _, x in items]), taps=taps)
            start = 0
            for v, c, x in items:
                sl = slice(start, start + len(x))
                outs[v, c] = (o.cls[sl], {k: t[sl] for k, t in o.tokens.items()})
                start += len(x)
        return [
            Encoded(
                torch.cat([outs[v, c][0] for c in range(len(chunks))]),
                [outs[v, c][1] for c in range(len(chunks))],
                [len(x) for x in chunks],
            )
            for v, chunks in enumerate(views)
        ]

    @classmethod
    def encode(cls, backbone: Backbone, chunks: list[torch.Tensor], taps: set[int]) -> Encoded:
        return cls.encode_views(backbone, [chunks], taps)[0]

    def encode_target(self, views: list[list[torch.Tensor]], taps) -> list[Encoded]:
        """The momentum / teacher encoding of the global views."""
        raise NotImplementedError

    def training_step(self, batch: dict, progress: Progress) -> dict[str, torch.Tensor]:
        """Loss terms, each already weighted; the loss is their sum.

        Views come global first (``batch["n_global"]``), then local; only global views reach
        the target network. Extra inputs (the clean view, rotated crops) are encoded by the
        online backbone in the same calls and handed to add-ons as ``batch["encoded"]``, as
        are the add-ons' own kinds of view (``batch["extra"]``, ``AddOn.view_request``).
        """
        taps = self.taps()
        views = batch["views"]
        inputs = {k: batch[k] for k in EXTRA_INPUTS if k in batch} | batch.get("extra", {})
        extras = list(inputs)
        enc = self.encode_views(self.backbone, views + [[inputs[k]] for k in extras], taps)
        online = enc[: len(views)]
        batch["encoded"] = dict(zip(extras, enc[len(views) :]))
        target = None
        if self.has_target:
            with torch.no_grad():
                target = self.encode_target(views[: batch.get("n_global", 2)], taps)
        if len(online) not in self.invariance_views:
            raise HarnessError(
                f"'{self.name}' got {len(online)} views, its invariance_loss takes "
                f"{' or '.join(map(str, self.invariance_views))}: pick a view policy that gives them"
            )
        terms = {"loss_inv": self.invariance_loss(online, target, progress)}
        for a in self.addons:
            terms.update(a.losses(self, batch, online, target, progress))
        return terms

    def ema(self, pairs: list[tuple[nn.Module, nn.Module]], m: float) -> None:
        with torch.no_grad():
            for online, twin in pairs:
                for po, pt in zip(online.parameters(), twin.parameters()):
                    pt.mul_(m).add_(po.detach(), alpha=1 - m)
