"""What an add-on may ask of the views, declared by the add-on (``AddOn.view_request``) and
served by the view policies: the data layer knows these requests, never the add-ons."""

from __future__ import annotations

from dataclasses import dataclass

from harness.data.augment import Pipeline


@dataclass(frozen=True)
class EquivPairs:
    """Pairs of views related by a group element, on the last ``ratio`` share of each rank's
    images: per pair one shared base crop, two photometric draws and a group element each
    (``policy``: a ``harness.model.group.POLICIES`` sampler, with its ``scale`` / ``aspect``).
    ``per_rank``: each rank its own draws; ``modifier``: how the method name sets the ratio
    (``+name@r``), for the error that suggests one."""

    ratio: float
    policy: str
    scale: tuple | float | None
    aspect: tuple | float | None
    per_rank: bool = True
    modifier: str = "@r"


@dataclass(frozen=True)
class ExtraView:
    """A kind of view an add-on needs beside the policy's (``AddOn.extra_views``): each
    base-method image rendered once more through ``pipeline``, its parameters recorded. The
    online backbone encodes it with the other views; the add-on finds it as
    ``batch["encoded"][name]`` and its parameters as ``batch["extra_params"][name]``."""

    name: str
    pipeline: Pipeline


@dataclass(frozen=True)
class ViewRequest:
    """What an add-on asks of the views (``AddOn.view_request``): equivariance pairs, the
    parameter vectors standardised (``batch["params_z"]``), and kinds of view of its own."""

    equiv_pairs: EquivPairs | None = None
    standardise_params: bool = False
    extra: tuple[ExtraView, ...] = ()
