"""Synthetic shapes-and-textures ImageFolder set, small enough to train a tiny ViT on a laptop.

Class = (shape, texture). Pose (rotation, flip, position, scale) and colours are drawn per image, so
an invariant SSL method must learn shape and texture while an equivariant one has a real pose signal
to predict: every shape is chiral and has no rotational symmetry, so a 90° turn or a flip always
changes the picture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from harness.errors import HarnessError

VERSION = 2
MANIFEST = ".synthetic.json"
_TMP_PREFIX = ".synthetic-tmp-"

# Polygons in a [-1, 1]^2 frame (y down). None is mirror-symmetric or rotation-symmetric.
SHAPES = {
    "ell": [(-0.6, -0.8), (-0.2, -0.8), (-0.2, 0.4), (0.6, 0.4), (0.6, 0.8), (-0.6, 0.8)],
    "eff": [
        (-0.6, -0.8),
        (0.6, -0.8),
        (0.6, -0.45),
        (-0.2, -0.45),
        (-0.2, -0.1),
        (0.3, -0.1),
        (0.3, 0.25),
        (-0.2, 0.25),
        (-0.2, 0.8),
        (-0.6, 0.8),
    ],
    "pee": [(-0.6, -0.8), (0.6, -0.8), (0.6, 0.1), (-0.2, 0.1), (-0.2, 0.8), (-0.6, 0.8)],
    "flag": [(-0.6, -0.8), (0.75, -0.45), (-0.3, -0.05), (-0.3, 0.8), (-0.6, 0.8)],
    "notchtri": [(-0.7, 0.7), (-0.05, 0.7), (0.15, 0.3), (0.35, 0.7), (0.8, 0.7), (-0.7, -0.6)],
}
TEXTURES = ("solid", "stripes", "dots", "checker")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)

_CANVAS = 128  # local-frame raster; rendering at 2x output size keeps resampling close to 1:1


def class_names(n_classes: int) -> list[str]:
    """Shape varies fastest, so any n >= 5 classes uses every shape and the first textures."""
    shapes = list(SHAPES)
    return [
        f"c{k:02d}_{shapes[k % len(shapes)]}_{TEXTURES[k // len(shapes)]}" for k in range(n_classes)
    ]


def _texture(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Drawn in the shape's own frame, so the texture turns and flips with the shape.
    p = 0.4
    if name == "solid":
        return np.zeros_like(u)
    if (
        name == "stripes"
    ):  # oblique, so the stripe angle relative to the shape is also pose-dependent
        return (np.floor((u * 0.866 + v * 0.5) / p) % 2).astype(np.float32)
    if name == "dots":
        du, dv = (u % p) - p / 2, (v % p) - p / 2
        return (du * du + dv * dv < (0.3 * p) ** 2).astype(np.float32)
    if name == "checker":
        return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
    raise ValueError(name)


def _class_sprite(shape: str, texture: str) -> Image.Image:
    """RGB image in the local frame: R = shape mask, G = texture mix (B unused)."""
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    scale = _CANVAS / 2
    ImageDraw.Draw(mask).polygon(
        [((x + 1) * scale, (y + 1) * scale) for x, y in SHAPES[shape]], fill=255
    )
    c = (np.arange(_CANVAS, dtype=np.float32) + 0.5) / scale - 1
    u, v = np.meshgrid(c, c)
    tex = (_texture(texture, u, v) * 255).astype(np.uint8)
    return Image.merge("RGB", [mask, Image.fromarray(tex), Image.new("L", mask.size, 0)])


def _colours(rng: np.random.Generator) -> np.ndarray:
    """Background, foreground and texture-mark colours: random hues, fixed polarity.

    A dark background, a light object and dark texture marks. With fully random colours
    the cheapest cue for an SSL objective is colour, which carries no class information,
    and a small ViT learns nothing else within a CPU budget; a fixed polarity leaves shape
    and texture as the signal while colours still vary per image.
    """
    bg = rng.uniform(0.0, 0.35, 3)
    fg = rng.uniform(0.65, 1.0, 3)
    marks = rng.uniform(0.0, 0.35, 3)
    return np.stack([bg, fg, marks]).astype(np.float32)


def render(sprite: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    big = 2 * size
    theta = rng.uniform(0, 2 * np.pi)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    half = rng.uniform(0.26, 0.42) * big  # half-extent of the shape frame, in pixels
    cx, cy = rng.uniform(half, big - half, size=2)
    # Output pixel -> shape frame: undo translation, rotation, flip and scale, then frame -> sprite pixels.
    cos, sin, k = np.cos(theta), np.sin(theta), (_CANVAS / 2) / half
    m = k * np.array([[flip * cos, flip * sin], [-sin, cos]])
    off = _CANVAS / 2 - m @ np.array([cx, cy])
    warped = sprite.transform(
        (big, big),
        Image.AFFINE,
        (m[0, 0], m[0, 1], off[0], m[1, 0], m[1, 1], off[1]),
        resample=Image.BILINEAR,
    )
    a = np.asarray(warped, dtype=np.float32)[..., :2] / 255
    alpha, mix = a[..., :1], a[..., 1:2]
    bg, fg, fg2 = _colours(rng)
    # A faint random gradient plus pixel noise keeps the background from being a flat give-away.
    ramp = np.linspace(-1, 1, big, dtype=np.float32)
    gx, gy = rng.uniform(-0.08, 0.08, size=2)
    background = bg + (gx * ramp[None, :, None] + gy * ramp[:, None, None])
    img = background * (1 - alpha) + (fg * (1 - mix) + fg2 * mix) * alpha
    img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))  # 2x2 box downsample = antialiasing
    img += rng.normal(0, 0.03, size=img.shape).astype(np.float32)
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def same_params(manifest, params: dict) -> bool:
    """Whether a generated tree's manifest records these parameters (beside its file count,
    listing and anything else it stores)."""
    return isinstance(manifest, dict) and {k: manifest.get(k) for k in params} == params


def tree_listing(root) -> dict[str, int]:
    """Relative path -> size of every file below ``root``, links not followed; names starting
    with a dot at the top (a manifest, a writer's temporary folder) left out. Stats only: no
    file is opened."""
    out, stack = {}, [(Path(root), "")]
    while stack:
        d, rel = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if not rel and e.name.startswith("."):
                    continue
                name = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), name))
                else:
                    out[name] = e.stat(follow_symlinks=False).st_size
    return out


def tree_digest(listing: dict[str, int]) -> str:
    """A hash of the sorted (path, size) list: any file added, removed, renamed or resized
    changes it."""
    text = "\n".join(f"{p}\t{n}" for p, n in sorted(listing.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def tree_record(root) -> dict:
    """What a manifest stores to be checked against its tree later: file count and digest."""
    listing = tree_listing(root)
    return {"files": len(listing), "listing": tree_digest(listing)}


def tree_drift(root, manifest: dict, expected=None) -> str | None:
    """How the tree under ``root`` differs from its manifest (None: it does not). ``expected``:
    the relative paths it should hold, to name the files missing or added; without it only
    the counts and the digest are compared."""
    listing = tree_listing(root)
    e = lambda names: f", e.g. {Path(root) / sorted(names)[0]}"  # noqa: E731
    if expected is not None:
        missing, added = set(expected) - set(listing), set(listing) - set(expected)
        parts = [f"{len(missing)} file(s) missing{e(missing)}"] if missing else []
        parts += [f"{len(added)} file(s) it did not write{e(added)}"] if added else []
        if parts:
            return "; ".join(parts)
    n = manifest.get("files")
    if isinstance(n, int) and n != len(listing):
        more = len(listing) - n
        return f"{abs(more)} file(s) {'more' if more > 0 else 'fewer'} than its manifest lists"
    digest = manifest.get("listing")
    if isinstance(digest, str) and digest != tree_digest(listing):
        return "files renamed or resized since its manifest was written"
    return None


def expected_files(params: dict) -> set[str]:
    """The relative paths ``generate`` writes for these parameters."""
    names = class_names(params["n_classes"])
    return {
        f"{split}/{name}/{i}.png"
        for split, count in (("train", params["train_per_class"]), ("val", params["val_per_class"]))
        for name in names
        for i in range(count)
    }


def generate(
    root,
    *,
    seed: int = 0,
    n_classes: int = 10,
    train_per_class: int = 200,
    val_per_class: int = 50,
    size: int = 64,
    force: bool = False,
) -> Path:
    """Write root/{train,val}/<class>/<i>.png plus root/.synthetic.json (written last = tree complete)."""
    root = Path(root)
    if not 2 <= n_classes <= MAX_CLASSES:
        raise HarnessError(
            f"n_classes={n_classes} is out of range: the synthetic set supports 2 to {MAX_CLASSES} classes"
        )
    if train_per_class < 1 or val_per_class < 1 or size < 16:
        raise HarnessError(
            f"bad synthetic sizes (train={train_per_class}, val={val_per_class}, size={size}): "
            "use at least 1 image per class per split and size >= 16"
        )
    params = {
        "version": VERSION,
        "seed": seed,
        "n_classes": n_classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "size": size,
    }
    manifest = root / MANIFEST
    if manifest.exists() and not force:
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            old = None
        if not same_params(old, params):
            raise HarnessError(
                f"{root} already holds a synthetic set with other parameters ({manifest}): "
                "pick another --root or pass --force to regenerate it"
            )
        drift = tree_drift(root, old, expected_files(params))
        if drift is None:
            return root  # fast path: identical set already there (stats only, nothing decoded)
        # Its manifest says this generator wrote the tree, so it may write it again.
        print(f"synthetic set at {root}: {drift}; rebuilding", file=sys.stderr)
        force = True
    entries = root.iterdir() if root.is_dir() else ()
    foreign = [p.name for p in entries if not p.name.startswith(_TMP_PREFIX)]
    if not force and foreign:
        raise HarnessError(
            f"{root} is not empty ({', '.join(sorted(foreign)[:3])}"
            f"{', …' if len(foreign) > 3 else ''}) and was not written by this generator: "
            "pick an empty --root or pass --force to write train/ and val/ into it"
        )

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):  # left by a killed run; never part of a valid tree
        shutil.rmtree(stale, ignore_errors=True)
    names = class_names(n_classes)
    sprites = [_class_sprite(*n.split("_")[1:]) for n in names]
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        splits = [("train", 0, train_per_class), ("val", 1, val_per_class)]
        with tqdm(
            total=n_classes * (train_per_class + val_per_class),
            desc=f"synthetic {root}",
            unit="img",
            leave=False,
        ) as bar:
            for split, split_id, count in splits:
                for label, (name, sprite) in enumerate(zip(names, sprites)):
                    d = tmp / split / name
                    d.mkdir(parents=True)
                    for i in range(count):
                        # One stream per image: the bytes of an image don't depend on the other counts.
                        rng = np.random.default_rng([seed, split_id, label, i])
                        render(sprite, size, rng).save(d / f"{i}.png")
                    bar.update(count)
        # The manifest goes first and comes back last, so a tree without one is never taken as complete.
        manifest.unlink(missing_ok=True)
        for split, _, _ in splits:
            if (root / split).exists():
                shutil.rmtree(root / split)
            os.replace(tmp / split, root / split)
        part = root / (MANIFEST + ".tmp")
        record = {**params, "classes": names, **tree_record(root)}
        part.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(part, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
