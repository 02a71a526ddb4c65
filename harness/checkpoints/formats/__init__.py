"""The checkpoint formats, one class per key layout, by name (``names()``, ``get(name)``)."""

from __future__ import annotations

from harness.checkpoints.formats.base import CheckpointFormat, Option, Source
from harness.checkpoints.formats.dino import Dino
from harness.checkpoints.formats.harness import Harness
from harness.checkpoints.formats.moco_v3 import MocoV3
from harness.checkpoints.formats.ser import Ser
from harness.checkpoints.formats.timm import Timm
from harness.errors import HarnessError

_REGISTRY: dict[str, CheckpointFormat] = {
    f.name: f for f in (Dino(), MocoV3(), Timm(), Ser(), Harness())
}
FORMATS = tuple(_REGISTRY)


def names() -> tuple[str, ...]:
    return FORMATS


def get(name: str) -> CheckpointFormat:
    if name not in _REGISTRY:
        raise HarnessError(f"unknown format '{name}': choose one of {', '.join(FORMATS)}")
    return _REGISTRY[name]


def detect(obj) -> str | None:
    """The name of the format that recognises ``obj`` (a loaded file) most surely, or None."""
    score, name = max((f.detect(obj), f.name) for f in _REGISTRY.values())
    return name if score > 0 else None


__all__ = ["FORMATS", "CheckpointFormat", "Option", "Source", "detect", "get", "names"]
