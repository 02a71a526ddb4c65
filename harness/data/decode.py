"""Every image the harness reads becomes 8-bit RGB here, whatever its mode.

PIL's ``convert("RGB")`` clips wider integer modes to 0–255: a 16-bit PNG (mode I;16, or I
once opened) comes out nearly all white. Those are scaled to 8 bits first (v / 257, the
inverse of the 8→16-bit 257·v); 32-bit float images have no agreed range and are refused by
name.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from harness.errors import HarnessError

_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    if img.mode in _WIDE:
        v = np.asarray(img, dtype=np.int64)
        if v.min() < 0 or v.max() > 65535:
            raise HarnessError(
                f"{name}: {img.mode} values outside 0–65535 ({v.min()}…{v.max()}): "
                "convert it to 8- or 16-bit RGB"
            )
        img = Image.fromarray(np.round(v / 257).astype(np.uint8), mode="L")
    elif img.mode == "F":
        raise HarnessError(
            f"{name}: a 32-bit float image (mode F) has no agreed value range: "
            "convert it to 8- or 16-bit RGB"
        )
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """torchvision's ``pil_loader`` (open, decode, RGB), for every mode. A file that does not
    decode (zero bytes, cut short, not an image) stops with its name and the fix."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size == 0:
            what = "is empty"
        elif isinstance(e, Image.UnidentifiedImageError):
            what = "is not an image in any format PIL reads"
        else:
            what = f"does not decode ({type(e).__name__}: {e})"
        raise HarnessError(
            f"image {path} {what}: replace it or remove it from the dataset "
            f"(`harness data check` lists every such file)"
        ) from None
    return to_rgb(img, str(path))
