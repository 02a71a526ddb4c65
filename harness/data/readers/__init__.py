"""Evaluation-set readers: one per dataset, each a torch Dataset over the head's label space that
refuses an incomplete or misnamed tree with a one-line error (see base.py)."""

from harness.data.readers.base import Inventory, Reader, imagenet_r_wnids, imagenet_wnids
from harness.data.readers.coco import COCO
from harness.data.readers.iebench import IEBench3D
from harness.data.readers.imagenet import ImageNet, ImageNetSketch
from harness.data.readers.imagenet_c import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    ImageNetC,
)
from harness.data.readers.imagenet_p import PERTURBATIONS, ImageNetP, decode
from harness.data.readers.imagenet_r import ImageNetR, class_mask, mask_logits
from harness.data.readers.imagenet_v2 import ImageNetV2

# `harness data check NAME` and the fixture tree names.
READERS = {
    "imagenet": ImageNet,
    "imagenet_v2": ImageNetV2,
    "imagenet_sketch": ImageNetSketch,
    "imagenet_r": ImageNetR,
    "imagenet_c": ImageNetC,
    "imagenet_p": ImageNetP,
    "3diebench": IEBench3D,
    "coco": COCO,
}

__all__ = [
    "READERS",
    "Inventory",
    "Reader",
    "ImageNet",
    "ImageNetV2",
    "ImageNetSketch",
    "ImageNetR",
    "ImageNetC",
    "ImageNetP",
    "IEBench3D",
    "COCO",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "ALL_CORRUPTIONS",
    "SEVERITIES",
    "PERTURBATIONS",
    "decode",
    "class_mask",
    "mask_logits",
    "imagenet_wnids",
    "imagenet_r_wnids",
]
