"""The allowed range of every numeric setting of a resolved config, and the relations between
settings, as data: ``validate`` checks a config against them before anything runs.

``RANGES`` maps a dotted key to (interval, why). An interval is written as in mathematics:
``[1, inf)`` (1 or more), ``(0, 1]``, ``[0, 2**32)``; an int-valued setting must be an int
inside it, a list-valued one must hold only values inside it. A key absent from a config (a
recipe entry of another method) is not checked; a value of None (``train.max_steps``,
``runtime.threads``: "the job decides") is always allowed where the type allows it. Choices
of string settings are in ``CHOICES``; relations between settings in ``RELATIONS``.

Method-name modifiers (``+ser@r0.25``) are checked by the add-on that reads them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.data.addon_views import ADDON_DATA
from harness.data.augment import FLAVOURS
from harness.data.pipelines import LOCAL_CROPS
from harness.errors import HarnessError

COUNT = "[0, inf)"
POSITIVE = "[1, inf)"
RATE = "(0, inf)"  # learning rates, temperatures, sizes that must be > 0
NONNEG = "[0, inf)"
UNIT = "[0, 1]"
PROB = "[0, 1]"

RANGES: dict[str, tuple[str, str]] = {
    "seed": ("[0, 2**32)", "the random seed numpy and the data order take"),
    # Backbone.
    "model.img_size": (POSITIVE, "pixels per side"),
    "model.patch_size": (POSITIVE, "pixels per patch side"),
    "model.width": (POSITIVE, "token width"),
    "model.depth": (POSITIVE, "transformer blocks"),
    "model.heads": (POSITIVE, "attention heads"),
    "model.drop_path": ("[0, 1)", "stochastic depth rate"),
    "heads.width_factor": (RATE, "scale of the methods' head widths"),
    # Pretraining schedule and recipe (a method's entries where it has them).
    "train.batch_size": (POSITIVE, "images per optimizer step over all ranks"),
    "train.epochs": (POSITIVE, "passes over the training set"),
    "train.max_steps": (POSITIVE, "a cap on the steps trained; null for none"),
    "recipe.base_lr": (RATE, "learning rate"),
    "recipe.bias_lr": (NONNEG, "learning rate of biases and norms"),
    "recipe.min_lr": (NONNEG, "final learning rate"),
    "recipe.min_lr_frac": (UNIT, "final learning rate as a share of the peak"),
    "recipe.weight_decay": (NONNEG, "weight decay"),
    "recipe.weight_decay_end": (NONNEG, "final weight decay"),
    "recipe.warmup_epochs": (NONNEG, "epochs of learning-rate warm-up"),
    "recipe.clip": (RATE, "gradient-norm clip; null for none"),
    "recipe.lambd": (NONNEG, "weight of the off-diagonal term"),
    "recipe.momentum": (UNIT, "teacher EMA momentum"),
    "recipe.center_momentum": (UNIT, "EMA momentum of the teacher's center"),
    "recipe.tau": (RATE, "contrastive temperature"),
    "recipe.student_temp": (RATE, "student temperature"),
    "recipe.teacher_temp": (RATE, "teacher temperature"),
    "recipe.warmup_teacher_temp": (RATE, "initial teacher temperature"),
    "recipe.warmup_teacher_temp_epochs": (NONNEG, "epochs of teacher-temperature warm-up"),
    "recipe.freeze_last_layer_epochs": (NONNEG, "epochs the last head layer stays frozen"),
    "recipe.drop_path": ("[0, 1)", "stochastic depth rate"),
    # Data and views.
    "data.n_classes": ("[2, inf)", "classes of the synthetic set"),
    "data.train_per_class": (POSITIVE, "training images per class"),
    "data.val_per_class": (POSITIVE, "validation images per class"),
    "data.size": (POSITIVE, "pixels per side of the synthetic images"),
    "views.crop_min": ("(0, 1]", "minimum crop scale, a share of the image area"),
    # Evaluations.
    "linear.epochs": (POSITIVE, "epochs of the linear probe"),
    "linear.batch_size": (POSITIVE, "images per step"),
    "linear.base_lrs.default": (RATE, "learning rates per 256 images swept, one head each"),
    "linear.base_lrs.moco_v3": (RATE, "learning rates per 256 images swept, one head each"),
    "linear.base_lrs.dino": (RATE, "learning rates per 256 images swept, one head each"),
    "linear.base_lrs.barlow_twins": (RATE, "learning rates per 256 images swept, one head each"),
    "linear.select_from": (COUNT, "epochs after which the heads are scored for selection"),
    "linear.heldout": ("(0, 1)", "share of train held out to select on"),
    "linear.n_last": (POSITIVE, "last blocks whose [CLS] tokens are concatenated"),
    "linear.resize": (POSITIVE, "pixels of the shorter side before the center crop"),
    "knn.ks": (POSITIVE, "neighbours"),
    "knn.temperature": (RATE, "temperature of the neighbours' weights"),
    "mlp.epochs": (POSITIVE, "epochs of the MLP probe"),
    "mlp.batch_size": (POSITIVE, "features per step"),
    "mlp.lr": (RATE, "learning rate"),
    "mlp.weight_decay": (NONNEG, "weight decay"),
    "mlp.hidden": (POSITIVE, "hidden width"),
    "finetune.epochs": (POSITIVE, "epochs of fine-tuning"),
    "finetune.batch_size": (POSITIVE, "images per step"),
    "finetune.base_lr": (RATE, "learning rate per 512 images"),
    "finetune.weight_decay": (NONNEG, "weight decay"),
    "finetune.warmup_epochs": (NONNEG, "epochs of warm-up"),
    "finetune.warmup_lr": (NONNEG, "learning rate at the start of the warm-up"),
    "finetune.min_lr": (NONNEG, "final learning rate"),
    "finetune.drop_path": ("[0, 1)", "stochastic depth rate"),
    "finetune.smoothing": ("[0, 1)", "label smoothing"),
    "finetune.mixup": (NONNEG, "Mixup alpha, 0: off"),
    "finetune.cutmix": (NONNEG, "CutMix alpha, 0: off"),
    "finetune.mixup_prob": (PROB, "probability of mixing a batch"),
    "finetune.mixup_switch_prob": (PROB, "probability of CutMix instead of Mixup"),
    "finetune.color_jitter": (NONNEG, "color jitter strength"),
    "finetune.reprob": (PROB, "random-erasing probability"),
    "finetune.crop_pct": ("(0, 1]", "center-crop share at evaluation"),
    "finetune.crop_scale": ("(0, 1]", "random-resized-crop scale range, shares of the area"),
    "finetune.clip_grad": (RATE, "gradient-norm clip; null for none"),
    "finetune.repeated_aug": (COUNT, "repeats of each image per epoch (RASampler); 0 or 1: none"),
    "equivariance.n_images": (POSITIVE, "images scored"),
    "equivariance.batch_size": (POSITIVE, "images per step"),
    "equivariance.layers": (POSITIVE, "blocks scored, 1 is the first"),
    "equivariance.areas": (RATE, "token-grid area ratios"),
    "transform_probe.epochs": (POSITIVE, "epochs of each probe"),
    "transform_probe.batch_size": (POSITIVE, "features per step"),
    "transform_probe.lr": (RATE, "learning rate"),
    "transform_probe.seeds": (POSITIVE, "probes per layer, each with its own seed"),
    "transform_probe.layers": (POSITIVE, "blocks probed, 1 is the first"),
    "transform_probe.per_class": (POSITIVE, "images per class"),
    "transform_probe.extract_batch": (POSITIVE, "images per extraction step"),
    "tsne.n_classes": (POSITIVE, "classes shown"),
    "tsne.per_class": (POSITIVE, "images per class"),
    "tsne.perplexity": (RATE, "t-SNE perplexity"),
    "tsne.severity": ("[1, 5]", "corruption severity, ImageNet-C's levels"),
    "iebench.epochs": (POSITIVE, "epochs of each probe"),
    "iebench.batch_size": (POSITIVE, "features per step"),
    "iebench.lr": (RATE, "learning rate"),
    "iebench.weight_decay": (NONNEG, "weight decay"),
    "detection.iterations": (POSITIVE, "training iterations"),
    "detection.batch_size": (POSITIVE, "images per iteration"),
    "detection.input_size": (POSITIVE, "pixels per side of the input crops"),
    "detection.scale_range": (RATE, "large-scale-jitter range"),
    "detection.lr": (RATE, "learning rate"),
    "detection.weight_decay": (NONNEG, "weight decay"),
    "detection.warmup_iters": (NONNEG, "iterations of warm-up"),
    "detection.lr_steps": ("(0, 1)", "shares of the schedule where the lr drops ×0.1"),
    "detection.rpn_per_image": (POSITIVE, "anchors sampled per image"),
    "detection.roi_per_image": (POSITIVE, "RoIs sampled per image"),
    "detection.pre_nms_topk": (POSITIVE, "proposals kept before NMS, train and test"),
    "detection.post_nms_topk": (POSITIVE, "proposals kept after NMS, train and test"),
    "detection.checkpoint_period": (POSITIVE, "iterations between checkpoints"),
    "detection.fixture.size": (POSITIVE, "pixels per side of the fixture's images"),
    "detection.fixture.train": (POSITIVE, "fixture training images"),
    "detection.fixture.val": (POSITIVE, "fixture validation images"),
    "detection.fixture.objects": (POSITIVE, "objects per fixture image at most"),
    # Where and how a run executes (null: the job decides).
    "runtime.num_workers": (COUNT, "DataLoader workers per process"),
    "runtime.threads": (COUNT, "torch threads per process, 0: torch's default"),
    "runtime.ckpt_every": (COUNT, "steps between checkpoints, 0: by time only"),
    "runtime.ckpt_minutes": (
        NONNEG,
        "minutes between checkpoints, 0: only at the end or on preemption",
    ),
    "runtime.log_every": (COUNT, "steps between reading the loss back, 0: every step"),
}

# String settings with a closed set of values.
CHOICES: dict[str, tuple[str, ...]] = {"views.photometric": tuple(FLAVOURS)}
# The add-ons' data pipelines: their own loaders (SER's) or the base method's views.
CHOICES["views.addon_data"] = ADDON_DATA
# The 2+4 local crops: SER's loader/local4.py or DINO's; MoCo-v3's 2+4 loss: SER's sum over
# every pair or the two-view weight (methods/moco_v3.py, MULTICROP_SCALES).
CHOICES["views.local_crops"] = tuple(LOCAL_CROPS)
CHOICES["recipe.multicrop_scale"] = ("public", "pairs")
# Evaluation protocols (harness/config/evaluations.py says what each value computes).
CHOICES["linear.select_on"] = ("val", "heldout")
CHOICES["linear.precision"] = ("fp16", "fp32")
CHOICES["robustness.preprocess"] = ("official", "resize")
CHOICES["iebench.input"] = ("sie", "imagenet")
CHOICES["iebench.val_views"] = ("one", "all")
CHOICES["mlp.schedule"] = ("constant", "cosine")
CHOICES["transform_probe.head"] = ("mlp", "linear")
CHOICES["transform_probe.schedule"] = ("constant", "cosine")
CHOICES["transform_probe.target"] = ("relative", "absolute")
CHOICES["finetune.report"] = ("best", "last")
CHOICES["equivariance.protocol"] = ("sampled", "fixed")

# Sections without ranges here: versions are the code's own, add-on options are the method
# name's modifiers (each add-on checks its own).
UNCHECKED = ("versions", "addons")


def _pairs(key: str, why: str):
    """A relation: the two-entry list at ``key`` holds (min, max) with min ≤ max."""

    def check(cfg: dict) -> str | None:
        v = _get(cfg, key)
        if v is None:
            return None
        if not isinstance(v, list) or len(v) != 2 or v[0] > v[1]:
            return f"{key}={_show(v)}: give [min, max] with min ≤ max ({why})"
        return None

    return check


def _divides(a: str, b: str, why: str):
    """A relation: the setting ``b`` is a multiple of the setting ``a``."""

    def check(cfg: dict) -> str | None:
        x, y = _get(cfg, a), _get(cfg, b)
        if None in (x, y) or y % x == 0:
            return None
        return f"{b}={y} is not a multiple of {a}={x} ({why})"

    return check


def _at_most(key: str, bound: str, why: str):
    """A relation: ``key`` (a number, or each entry of a list) is at most the setting ``bound``."""

    def check(cfg: dict) -> str | None:
        v, top = _get(cfg, key), _get(cfg, bound)
        if v is None or top is None:
            return None
        bad = [x for x in (v if isinstance(v, list) else [v]) if x > top]
        if not bad:
            return None
        return f"{key}={_show(v)}: allowed at most {bound}={top} ({why})"

    return check


def _increasing(key: str, why: str):
    def check(cfg: dict) -> str | None:
        v = _get(cfg, key)
        if isinstance(v, list) and any(a > b for a, b in zip(v, v[1:])):
            return f"{key}={_show(v)}: give the entries in increasing order ({why})"
        return None

    return check


def _before(key: str, bound: str, why: str):
    """A relation: the setting ``key`` is less than the setting ``bound``."""

    def check(cfg: dict) -> str | None:
        v, top = _get(cfg, key), _get(cfg, bound)
        if v is None or top is None or v < top:
            return None
        return f"{key}={v}: must be less than {bound}={top} ({why})"

    return check


def _lists_filled(key: str, why: str):
    """A relation: every entry of the mapping at ``key`` is a non-empty list."""

    def check(cfg: dict) -> str | None:
        v = _get(cfg, key)
        for name, entry in (v or {}).items():
            if not isinstance(entry, list) or not entry:
                return f"{key}.{name}={_show(entry)}: give a non-empty list ({why})"
        return None

    return check


RELATIONS = (
    _lists_filled("linear.base_lrs", "one linear head is trained per learning rate"),
    _before("linear.select_from", "linear.epochs", "the heads are scored after later epochs"),
    _divides("model.heads", "model.width", "each attention head takes width/heads channels"),
    _divides("model.patch_size", "model.img_size", "the image is cut into whole patches"),
    _at_most("linear.n_last", "model.depth", "the backbone has that many blocks"),
    _pairs("finetune.crop_scale", "random-resized-crop scale"),
    _pairs("detection.scale_range", "large-scale-jitter range"),
    _increasing("detection.lr_steps", "the lr drops at these shares of the schedule in turn"),
)

_INTERVAL = re.compile(r"([\[(])\s*([^,]+?)\s*,\s*([^\])]+?)\s*([\])])")


def _bounds(interval: str) -> tuple[float, float, bool, bool]:
    m = _INTERVAL.fullmatch(interval)
    if not m:
        raise ValueError(f"not an interval: {interval!r}")
    lo, hi = (_number(s) for s in (m.group(2), m.group(3)))
    return lo, hi, m.group(1) == "[", m.group(4) == "]"


def _number(text: str) -> float:
    if text in ("inf", "-inf"):
        return float(text)
    if "**" in text:
        base, exp = text.split("**")
        return float(int(base) ** int(exp))
    return float(text)


def inside(value: float, interval: str) -> bool:
    """Whether ``value`` lies in ``interval`` (NaN lies in none)."""
    lo, hi, lo_in, hi_in = _bounds(interval)
    if math.isnan(value):
        return False
    above = value >= lo if lo_in else value > lo
    below = value <= hi if hi_in else value < hi
    return above and below


def _get(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


def problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` at ``key`` by ``RANGES``/``CHOICES`` (one line), or None."""
    if key in CHOICES and value is not None and value not in CHOICES[key]:
        return f"{key}={_show(value)}: choose one of {', '.join(CHOICES[key])}"
    if key not in RANGES or value is None:
        return None
    interval, why = RANGES[key]
    items = value if isinstance(value, list) else [value]
    for x in items:
        if not (isinstance(x, (int, float)) and not isinstance(x, bool) and inside(x, interval)):
            each = "each entry " if isinstance(value, list) else ""
            return f"{key}={_show(value)}: out of range, {each}allowed in {interval} ({why})"
    return None


def validate(cfg: dict, hint: str = "") -> dict:
    """``cfg`` if every setting is in its range and every relation holds; else a one-line
    ``HarnessError`` naming the key, the value and what is allowed."""
    # Every range before any relation: relations may divide by a setting.
    found = (problem(key, _get(cfg, key)) for key in (*RANGES, *CHOICES))
    msg = next((m for m in found if m), None) or next((m for c in RELATIONS if (m := c(cfg))), None)
    if msg is None:
        return cfg
    if hint:  # inside the message's closing parenthesis, or as one of its own
        msg = f"{msg[:-1]}; {hint})" if msg.endswith(")") else f"{msg} ({hint})"
    raise HarnessError(msg)
