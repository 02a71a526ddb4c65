"""Datasets: the synthetic shapes set and validated ImageFolder loading."""

from harness.data.imagefolder import ImageFolderDataset, check_imagefolder
from harness.data.synthetic import generate

__all__ = ["ImageFolderDataset", "check_imagefolder", "generate"]
