"""Scale presets. ``paper`` is the paper's ViT-S/16 at 224 px on ImageNet-1k; ``tiny`` keeps
12 blocks (so "layer 3" means what it means in the paper) at 32 px on the synthetic set and
runs on a laptop CPU; ``micro`` is the smallest thing that exercises every code path (tests).

``paper`` is the whole preset: ``PAPER`` plus one section per evaluation, ``EVALUATIONS`` (the
evaluations' paper recipes, read when a preset is asked for, so a default changed there holds
everywhere). ``tiny`` and ``micro`` state only what differs from it (``DELTAS``), deep-merged
onto it: a nested mapping merges key by key, anything else (numbers, lists) replaces.

A preset fixes sizes, data and schedule; methods keep their own paper recipes, and a preset
only overrides the entries that must change with scale (``recipe``: for every method,
``recipe_by_base``: per base method; ``addons``: per add-on, by name). Heads keep the methods'
paper widths scaled by ``heads.width_factor``.
"""

from __future__ import annotations

import copy

from harness.config.evaluations import EVALUATIONS
from harness.errors import HarnessError

PAPER: dict = {
    "scale": "ViT-S/16, 224 px, ImageNet-1k, batch 2048, 100 epochs",
    "model": {
        "img_size": 224,
        "patch_size": 16,
        "width": 384,
        "depth": 12,
        "heads": 6,
        # The public SER code's positional-embedding interpolation and frozen patch-projection
        # init ("timm" / "moco_v3": the departures, methods/departures.py).
        "pos_interp": "public",
        "patch_embed_init": "public",
    },
    "heads": {"width_factor": 1.0},
    # skip_bad: a training image that does not decode is skipped and logged instead of
    # stopping the run (hashed only when on: a run that skipped images is another run).
    "data": {"dataset": "imagenet", "skip_bad": False},
    "train": {"batch_size": 2048, "epochs": 100, "max_steps": None},
    # crop_min None: the augmentation's own minimum crop scale. photometric: "kornia", the
    # public SER code's GPU pipeline for every view ("torchvision": the base methods' own;
    # harness/data/augment.py). local_crops: "ser", SER's loader/local4.py for the 2+4 local
    # crops ("dino": DINO's own; harness/data/views.py).
    # addon_data: "ser", +AugSelf / +STL / +EquiMod train on their own loaders as the public
    # SER code configures them ("base": the base method's views; harness/data/addon_views.py).
    "views": {
        "crop_min": None,
        "photometric": "kornia",
        "local_crops": "ser",
        "addon_data": "ser",
    },
    "recipe": {},
    "recipe_by_base": {},
    "addons": {},
}

# What tiny and micro change from ``paper``.
DELTAS: dict[str, dict] = {
    "tiny": {
        "scale": "ViT width 96, depth 12, 6 heads, patch 8, 32 px, 200 steps of 64; "
        "a synthetic 10-class set stands in for ImageNet-1k",
        "model": {"img_size": 32, "patch_size": 8, "width": 96},
        "heads": {"width_factor": 0.125},
        "data": {
            "dataset": "synthetic",
            "n_classes": 10,
            "train_per_class": 160,
            "val_per_class": 40,
            "size": 36,
        },
        "train": {"batch_size": 64, "epochs": 8},
        # 8 % crops of a 36 px image are mostly background: keep crops at ≥ 30 % of the area.
        "views": {"crop_min": 0.3},
        # A few hundred steps instead of 100 epochs: higher lr, short warm-up.
        "recipe": {"base_lr": 4e-3, "warmup_epochs": 1},
        # DINO's teacher temperature warms over 10 of 100 epochs; here, like the lr, over 1.
        "recipe_by_base": {
            "barlow_twins": {"base_lr": 2e-3, "bias_lr": 2e-3},
            "dino": {"warmup_teacher_temp_epochs": 1},
        },
        "addons": {"ser": {"ratio": 0.125}},
        "linear": {
            "epochs": 100,
            "batch_size": 64,
            "base_lrs": {b: [0.5, 1.5] for b in ("moco_v3", "dino", "barlow_twins", "default")},
            "select_from": 80,
            "augment": False,
            "resize": 36,
        },
        "mlp": {"epochs": 100},
        # DeiT's regularisers (Mixup/CutMix, RandAugment, erasing) are for 300 epochs of 1.28M
        # images; on 1 600 images at 32 px for 500 steps they keep the model from fitting
        # (fine-tune 20.5 % < linear 35.5 % on MoCo-v3). Off, lr at the tiny pretraining's,
        # crops ≥ 30 % as in pretraining: 40.0 % after 20 epochs, 56.2 % after 40. (Its loader
        # workers, 2 before, are runtime.num_workers now, as every evaluation's.)
        "finetune": {
            "epochs": 40,
            "batch_size": 64,
            "warmup_epochs": 1,
            "base_lr": 4e-3,
            "mixup": 0.0,
            "cutmix": 0.0,
            "auto_augment": None,
            "reprob": 0.0,
            "crop_scale": [0.3, 1.0],
            # DeiT's ×3 repeated augmentation keeps an epoch at n//256·256 draws, i.e. 512
            # distinct images of the 1 600 here: a third of the set per epoch. Off, as the
            # regularisers above, so the numbers quoted stay what they measured.
            "repeated_aug": 1,
        },
        "equivariance": {"n_images": 400},
        # SIE's 300 epochs of a 1024-wide MLP on 1 000 pairs are ~18 s per probe on 2 CPU
        # cores, ×60 probes (5 layers × 2 tasks × 3 seeds × trained and random-init): ~18 min.
        # 30 epochs (the earlier default) keep the tiny transformation probe at ~2 min.
        "transform_probe": {"epochs": 30},
        "tsne": {"per_class": 40},
        # 128 px images with up to 4 shapes (boxes 15–70 px); the patch-8 encoder gives a
        # stride-8 map, so the pyramid's levels have strides 2–16 (+32). On a CPU the 4conv
        # box head over the sampled RoIs and the stride-2 level dominate: 2 images of 32 RoIs
        # per iteration, 300 iterations, a milder scale jitter, lr 2e-4 for the short schedule.
        "detection": {
            "iterations": 300,
            "batch_size": 2,
            "input_size": 128,
            "scale_range": [0.8, 1.25],
            "lr": 2e-4,
            "weight_decay": 0.05,
            "warmup_iters": 50,
            "rpn_per_image": 64,
            "roi_per_image": 32,
            "pre_nms_topk": [400, 200],
            "post_nms_topk": [200, 100],
            "checkpoint_period": 100,
            "fixture": {"size": 128, "train": 256, "val": 64, "objects": 4},
        },
    },
    "micro": {
        "scale": "ViT width 32, depth 12, 2 heads, patch 4, 16 px, 3 steps; "
        "a synthetic 10-class set stands in for ImageNet-1k",
        "model": {"img_size": 16, "patch_size": 4, "width": 32, "heads": 2},
        "heads": {"width_factor": 1 / 64},
        "data": {
            "dataset": "synthetic",
            "n_classes": 10,
            "train_per_class": 8,
            "val_per_class": 4,
            "size": 20,
        },
        "train": {"batch_size": 16, "epochs": 1, "max_steps": 3},
        "recipe": {"base_lr": 4e-3, "warmup_epochs": 0},
        "recipe_by_base": {"barlow_twins": {"base_lr": 2e-3, "bias_lr": 2e-3}},
        "addons": {"ser": {"ratio": 0.25}},
        "linear": {
            "epochs": 5,
            "batch_size": 32,
            "base_lrs": {b: [0.5, 1.5] for b in ("moco_v3", "dino", "barlow_twins", "default")},
            "select_from": 3,
            "augment": False,
            "resize": 20,
        },
        "mlp": {"epochs": 2, "hidden": 64},
        "finetune": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0},
        "equivariance": {"n_images": 8},
        "transform_probe": {"per_class": 2, "epochs": 2, "seeds": 1},
        "tsne": {"per_class": 4},
        # The patch-4 encoder puts the finest pyramid level at stride 1: 32-px inputs keep
        # it small (the fixture's 64-px images are resized).
        "detection": {
            "iterations": 4,
            "batch_size": 2,
            "input_size": 32,
            "scale_range": [0.8, 1.25],
            "warmup_iters": 1,
            "rpn_per_image": 32,
            "roi_per_image": 16,
            "pre_nms_topk": [64, 32],
            "post_nms_topk": [32, 16],
            "checkpoint_period": 2,
            "fixture": {"size": 64, "train": 8, "val": 4, "objects": 3},
        },
    },
}


def merge(base: dict, delta: dict) -> dict:
    """``base`` with ``delta`` deep-merged onto it (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# What each preset states; ``get`` gives the whole of one.
PRESETS: dict[str, dict] = {"paper": PAPER, **DELTAS}


def get(name: str) -> dict:
    """The full preset: paper's with the preset's delta merged in (a new dict every call)."""
    if name not in PRESETS:
        raise HarnessError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    paper = {**copy.deepcopy(PAPER), **copy.deepcopy(EVALUATIONS)}
    return paper if name == "paper" else merge(paper, DELTAS[name])
