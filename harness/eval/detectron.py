"""detectron2's ViTDet around a frozen harness encoder: the model, its trainer, its evaluation.

Imported only by ``harness.eval.detection`` once detectron2 is known to be importable, so the
rest of the harness never needs detectron2. Everything that is ViTDet's is detectron2's own
code, built here with the constructors its LazyConfig files call
(``configs/common/models/mask_rcnn_vitdet.py``, box-only; ``model_zoo`` is never imported, as it
needs ``pkg_resources``, which setuptools >= 82 no longer ships):

* backbone: the run's encoder, frozen, giving the last block's patch-token map (stride = patch
  size), under detectron2's ``SimpleFeaturePyramid`` (scales 4, 2, 1, 0.5, LN, 256 channels,
  a max-pooled extra level, square padding to the input size);
* RPN with 2 convs, anchors of 8 × each level's stride (ViTDet's 32…512 on strides 4…64),
  aspect ratios 0.5, 1, 2; Faster R-CNN box head with 4 convs + 1 fc, LN; ROIAlignV2;
* trained with ``SimpleTrainer`` (``AMPTrainer`` on GPUs), AdamW, warm-up + multi-step lr,
  ``DetectionCheckpointer`` + ``PeriodicCheckpointer``, resumed from the last checkpoint;
* scored with ``COCOEvaluator`` on pycocotools' COCOeval (``use_fast_impl=False``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer, hooks
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.layers import ShapeSpec
from detectron2.modeling import GeneralizedRCNN, SimpleFeaturePyramid
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    StandardROIHeads,
)
from detectron2.solver import WarmupParamScheduler, get_default_optimizer_params
from detectron2.utils import comm
from fvcore.common.param_scheduler import MultiStepParamScheduler

from harness.data.augment import MEAN, STD
from harness.data.readers.coco import SPLITS, annotation_file
from harness.io import write_json, write_text
from harness.parallel.preempt import Preemption

FEATURE = "last_feat"


class FrozenEncoder(Backbone):
    """The run's encoder as a detectron2 ``Backbone``: one map, the patch tokens of block
    ``layer`` (B×D×H/p×W/p). Frozen three ways: no parameter requires a gradient, the forward
    runs under ``no_grad``, and it stays in eval mode whatever mode detectron2 sets (its
    trainer calls ``train()``, ``inference_on_dataset`` restores the mode it found)."""

    def __init__(self, encoder: torch.nn.Module, layer: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.layer = layer
        self._out_features = [FEATURE]
        self._out_feature_channels = {FEATURE: encoder.width}
        self._out_feature_strides = {FEATURE: encoder.cfg.patch_size}
        self.train(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict:
        with torch.no_grad():
            return {FEATURE: self.encoder(x, taps={self.layer}).tokens[self.layer]}


def build_model(encoder: torch.nn.Module, layer: int, det: dict, num_classes: int):
    """ViTDet's box-only Faster R-CNN on the frozen encoder (see the module docstring)."""
    size = det["input_size"]
    top = LastLevelMaxPool()
    # It pools the coarsest level, p5 at a 16-px patch: levels are named by log2(stride).
    top.in_feature = f"p{int(math.log2(2 * encoder.cfg.patch_size))}"
    backbone = SimpleFeaturePyramid(
        net=FrozenEncoder(encoder, layer),
        in_feature=FEATURE,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=top,
        norm="LN",
        square_pad=size,
    )
    shapes = backbone.output_shape()
    levels = list(shapes)  # p2…p6 at a 16-px patch; the names follow the strides
    strides = [shapes[n].stride for n in levels]
    rpn = RPN(
        in_features=levels,
        head=StandardRPNHead(in_channels=256, num_anchors=3, conv_dims=[-1, -1]),
        anchor_generator=DefaultAnchorGenerator(
            sizes=[[8 * s] for s in strides],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=strides,
            offset=0.0,
        ),
        anchor_matcher=Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=det["rpn_per_image"],
        positive_fraction=0.5,
        pre_nms_topk=tuple(det["pre_nms_topk"]),
        post_nms_topk=tuple(det["post_nms_topk"]),
        nms_thresh=0.7,
    )
    box_levels = levels[:-1]  # the max-pooled level feeds the RPN only
    roi_heads = StandardROIHeads(
        num_classes=num_classes,
        batch_size_per_image=det["roi_per_image"],
        positive_fraction=0.25,
        proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
        box_in_features=box_levels,
        box_pooler=ROIPooler(
            output_size=7,
            scales=tuple(1.0 / shapes[n].stride for n in box_levels),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=FastRCNNConvFCHead(
            ShapeSpec(channels=256, height=7, width=7),
            conv_dims=[256, 256, 256, 256],
            fc_dims=[1024],
            conv_norm="LN",
        ),
        box_predictor=FastRCNNOutputLayers(
            ShapeSpec(channels=1024),
            box2box_transform=Box2BoxTransform(weights=(10, 10, 5, 5)),
            num_classes=num_classes,
            test_score_thresh=0.05,
        ),
    )
    return GeneralizedRCNN(
        backbone=backbone,
        proposal_generator=rpn,
        roi_heads=roi_heads,
        pixel_mean=[255 * m for m in MEAN],  # the encoder's own input normalisation
        pixel_std=[255 * s for s in STD],
        input_format="RGB",
    )


def register(root: Path) -> dict[str, str]:
    """Both splits in detectron2's DatasetCatalog (once per process): split → dataset name.
    ``load_coco_json`` maps COCO's category ids to contiguous ones, and COCOEvaluator back."""
    root = Path(root).resolve()
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    names = {}
    for split in SPLITS:
        name = names[split] = f"harness_coco_{tag}_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(annotation_file(root, split)), str(root / split))
    return names


def num_categories(root: Path) -> int:
    """From val2017's JSON (the smaller; the scan checked that both list the same)."""
    return len(json.loads(annotation_file(root, SPLITS[1]).read_text())["categories"])


def _scheduler(det: dict) -> WarmupParamScheduler:
    """ViTDet's: linear warm-up from 0.001×, then ×0.1 at each fraction of ``lr_steps``
    (steps that round to the same iteration, at tiny schedules, count once)."""
    n = det["iterations"]
    milestones = sorted({int(f * n) for f in det["lr_steps"] if 0 < int(f * n) < n})
    return WarmupParamScheduler(
        MultiStepParamScheduler(
            values=[0.1**k for k in range(len(milestones) + 1)],
            milestones=milestones,
            num_updates=n,
        ),
        warmup_length=min(1.0, det["warmup_iters"] / n),
        warmup_factor=0.001,
    )


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _iter_of(line: str) -> float:
    try:
        return json.loads(line)["iter"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by the kill


class Progress(HookBase):
    """One line per finished iteration in ``iterations.jsonl`` (iteration, loss, seconds)."""

    def __init__(self, path: Path, quiet: bool):
        self.path, self.quiet, self.t0 = path, quiet, time.time()

    def after_step(self):
        it = self.trainer.iter
        loss = self.trainer.storage.history("total_loss").latest()
        _append(self.path, {"iter": it, "loss": loss, "s": round(time.time() - self.t0, 3)})
        if not self.quiet and (it + 1) % 20 == 0:
            print(f"detection: iteration {it + 1}/{self.trainer.max_iter}, loss {loss:.3f}")


class Preempted(HookBase):
    """Preemption as pretraining handles it (``harness.parallel.preempt``): submitit's warning
    signal is only noted; the iteration finishes, its checkpoint is saved, and the signal is
    handed to submitit, which requeues the job; the requeued job resumes from it."""

    def __init__(self, checkpointer: DetectionCheckpointer, events: Path):
        self.checkpointer, self.events = checkpointer, events
        self.warning = Preemption()

    def before_train(self):
        self.warning.__enter__()

    def after_step(self):
        # Every rank stops after the same iteration (one reduction over the ranks' flags).
        if not self.warning.requested() or self.trainer.iter + 1 >= self.trainer.max_iter:
            return
        it = self.trainer.iter
        if comm.is_main_process():
            self.checkpointer.save(f"model_{it:07d}", iteration=it)
            _append(self.events, {"event": "preempted", "iter": it})
        self.warning.hand_over()  # after a barrier: the checkpoint is on disk; then exits

    def after_train(self):
        self.warning.__exit__(None, None, None)


def train(model, dataset: str, det: dict, out: Path, num_workers: int, quiet: bool) -> int:
    """Train the pyramid and heads for ``det["iterations"]``, resuming from ``out``'s last
    checkpoint if there is one; returns the iteration it started from."""
    if not quiet:
        logging.getLogger("detectron2").setLevel(logging.WARNING)
    size = det["input_size"]
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[  # ViTDet's LSJ: flip, scale jitter, fixed-size crop
            T.RandomFlip(horizontal=True),
            T.ResizeScale(
                min_scale=det["scale_range"][0],
                max_scale=det["scale_range"][1],
                target_height=size,
                target_width=size,
            ),
            T.FixedSizeCrop(crop_size=(size, size), pad=False),
        ],
        image_format="RGB",
        use_instance_mask=False,
    )
    loader = build_detection_train_loader(
        dataset=get_detection_dataset_dicts(dataset),
        mapper=mapper,
        total_batch_size=det["batch_size"],
        num_workers=num_workers,
    )
    params = get_default_optimizer_params(model, base_lr=det["lr"], weight_decay_norm=0.0)
    optimizer = torch.optim.AdamW(
        params, lr=det["lr"], betas=(0.9, 0.999), weight_decay=det["weight_decay"]
    )
    amp = det["amp"] and torch.cuda.is_available()
    trainer = (AMPTrainer if amp else SimpleTrainer)(model, loader, optimizer)
    checkpointer = DetectionCheckpointer(model, str(out), trainer=trainer)
    main = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=_scheduler(det)),
            hooks.PeriodicCheckpointer(
                checkpointer, det["checkpoint_period"], max_iter=det["iterations"], max_to_keep=2
            )
            if main
            else None,
            Progress(out / "iterations.jsonl", quiet) if main else None,
            Preempted(checkpointer, out / "events.jsonl"),
        ]
    )
    checkpointer.resume_or_load("", resume=True)
    start = trainer.iter + 1 if checkpointer.has_checkpoint() else 0
    if start and main:
        _append(out / "events.jsonl", {"event": "resumed", "iter": start})
        # Killed without warning, it resumes from an earlier checkpoint: the iterations
        # after it are run again, and logged once.
        log = out / "iterations.jsonl"
        if log.exists():
            kept = [ln for ln in log.read_text().splitlines() if _iter_of(ln) < start]
            write_text(log, "".join(ln + "\n" for ln in kept))
    if start < det["iterations"]:
        trainer.train(start, det["iterations"])
    if main:  # done: model_final.pth is what a requeued job resumes from; the others go
        for p in out.glob("model_[0-9]*.pth"):
            p.unlink()
    return start


def evaluate(model, dataset: str, det: dict, num_workers: int = 0) -> dict:
    """mAP, AP50, AP75 of ``model`` on ``dataset`` as fractions (COCOEvaluator's percent / 100;
    0 when the model detects nothing, where COCOEvaluator says NaN)."""
    size = det["input_size"]
    mapper = DatasetMapper(
        is_train=False,
        augmentations=[T.ResizeShortestEdge(short_edge_length=size, max_size=size)],
        image_format="RGB",
    )
    loader = build_detection_test_loader(
        dataset=get_detection_dataset_dicts(dataset, filter_empty=False),
        mapper=mapper,
        num_workers=num_workers,
    )
    evaluator = COCOEvaluator(dataset, tasks=("bbox",), output_dir=None, use_fast_impl=False)
    res = inference_on_dataset(model, loader, evaluator)
    box = (res or {}).get("bbox", {})

    def frac(key: str) -> float:
        v = box.get(key, float("nan"))
        return 0.0 if v is None or math.isnan(v) else v / 100

    return {"mAP": frac("AP"), "mAP50": frac("AP50"), "mAP75": frac("AP75")}


def save_metrics(path: Path, metrics: dict) -> None:
    if comm.is_main_process():
        write_json(path, metrics)
