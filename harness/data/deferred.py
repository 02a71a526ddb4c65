"""Deferred view chunks (``runtime.gpu_augment``): workers stop after the geometric part and
hand over uint8 crops with their drawn parameters; ``finish`` renders them batched on the
training device. Parameters are drawn exactly as without deferral."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.data.photometric import render
from harness.model import group


@dataclass(frozen=True)
class GroupAction:
    """What follows a deferred chunk's photometric part: each image acted on by its group
    element, in patch units."""

    elements: list
    unit: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return group.act_each(x, self.elements, unit=self.unit)


@dataclass
class DeferredChunk:
    """One view chunk left for the training device: uint8 crops, their parameters, the blur
    kernel and flavour of the photometric part, and what follows it (``then``, or None)."""

    crops: torch.Tensor
    params: torch.Tensor
    blur: int
    flavour: str
    then: Callable[[torch.Tensor], torch.Tensor] | None = None

    def render(self, device=None) -> torch.Tensor:
        """Rendered on ``device`` (default: where the crops lie); the parameters stay on the
        host and steer the ops without reading anything back from the device."""
        crops = self.crops if device is None else self.crops.to(device, non_blocking=True)
        x = render(crops, self.params, self.blur, flavour=self.flavour)
        return self.then(x) if self.then is not None else x

    def pin_memory(self) -> DeferredChunk:
        return dataclasses.replace(self, crops=self.crops.pin_memory())


def rot4(crops: torch.Tensor) -> torch.Tensor:
    # Label k ⇔ torch.rot90(crop, k): every crop in all four rotations.
    return torch.cat([torch.rot90(crops, k, dims=(-2, -1)) for k in range(4)])


def finish(batch: dict, device=None) -> dict:
    """Render a deferred batch on ``device`` (default: where its crops lie): each
    ``DeferredChunk`` batched. A batch rendered in the workers passes through."""

    def done(chunk):
        return chunk.render(device) if isinstance(chunk, DeferredChunk) else chunk

    batch["views"] = [[done(c) for c in chunks] for chunks in batch["views"]]
    if "rotated" in batch:
        batch["rotated"] = done(batch["rotated"])
    if "extra" in batch:
        batch["extra"] = {k: done(c) for k, c in batch["extra"].items()}
    return batch
