"""Frozen-backbone COCO detection (Table 6; spec/evals.md §6; paper Appendix B.3): the run's
encoder frozen, detectron2's ViTDet pyramid and Faster R-CNN box heads trained on COCO 2017
train, scored on val2017 with COCOEvaluator (pycocotools).

Metrics are **fractions** (0–1), as Table 6 prints them (0.225 …), not percent like the
classification evaluators: ``mAP`` (AP@[.50:.95]), ``mAP50`` and ``mAP75``.

The training is long (45 000 iterations at the paper's scale), so it checkpoints under
``<run>/eval/detection-coco-<key>/`` (``model_*.pth`` and detectron2's ``last_checkpoint``,
``key``: the detection recipe, evaluator version and data root) and resumes from there: a job
preempted (USR2: the checkpoint of the current iteration is saved, then submitit requeues) or
killed (the last periodic checkpoint) continues where it stopped, and the metrics, once
computed, are kept there (``metrics.json``) so a requeued job never computes them twice.
With several Slurm tasks (one per GPU), each is one torch.distributed rank, as in pretraining.

detectron2 is imported here only, and only when the evaluation runs: everything else in the
harness works without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from harness.config import load_trained
from harness.data.loading import default_workers
from harness.data.readers.coco import COCO
from harness.errors import HarnessError
from harness.io import try_read_json
from harness.parallel import dist

VERSION = 1
METRICS = ("mAP", "mAP50", "mAP75")
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
INSTALL = (
    "detectron2 is not installed: `make detection` builds it, or after torch run "
    "`pip install --no-build-isolation "
    f"'git+https://github.com/facebookresearch/detectron2.git@{DETECTRON2_COMMIT}'`"
)


def detectron():
    """The detectron2 side (harness.eval.detectron), or the one-line way to install it."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        raise HarnessError(INSTALL) from None
    from harness.eval import detectron as d2

    return d2


def work_dir(run_dir: Path, det: dict, dataset_root: Path) -> Path:
    """Where this detection training keeps its checkpoints and metrics."""
    key = {"version": VERSION, "detection": det, "data": str(Path(dataset_root).resolve())}
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return Path(run_dir) / "eval" / f"detection-coco-{h}"


def _check(det: dict) -> None:
    for k in ("iterations", "batch_size", "input_size", "rpn_per_image", "roi_per_image"):
        if not isinstance(det[k], int) or det[k] < 1:
            raise HarnessError(f"detection.{k}={det[k]!r}: must be a positive integer")
    if det["checkpoint_period"] < 1:
        raise HarnessError(f"detection.checkpoint_period={det['checkpoint_period']!r}: must be ≥ 1")
    lo, hi = det["scale_range"]
    if not 0 < lo <= hi:
        raise HarnessError(f"detection.scale_range={det['scale_range']}: need 0 < min ≤ max")


def frozen_model(run_dir: Path, det: dict, num_classes: int, device=None):
    """The detector on a finished run's frozen encoder: pyramid and heads at their init."""
    d2 = detectron()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_trained(run_dir, device).eval_backbone()
    layer = len(encoder.blocks)  # the last block's map, as ViTDet
    return d2.build_model(encoder, layer, det, num_classes).to(device)


def run_detection(run_dir, data_root, cfg, dataset_root=None, quiet=False) -> dict:
    det = cfg["detection"]
    _check(det)
    d2 = detectron()
    if dataset_root is None:
        raise HarnessError("detection reads COCO: set HARNESS_DATA_COCO to its root")
    COCO.inventory(dataset_root).require()
    out = work_dir(run_dir, det, dataset_root)
    done = try_read_json(out / "metrics.json")
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    if dist.init_from_env():
        from detectron2.utils import comm

        comm.create_local_process_group(
            int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE", 1))
        )
    names = d2.register(dataset_root)
    model = frozen_model(run_dir, det, d2.num_categories(dataset_root))
    workers = default_workers(cfg.get("runtime"))
    trained = model
    if dist.is_dist():
        local = torch.cuda.current_device() if torch.cuda.is_available() else None
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=None if local is None else [local], broadcast_buffers=False
        )
    d2.train(trained, names["train2017"], det, out, workers, quiet)
    metrics = d2.evaluate(model, names["val2017"], det, workers)
    if dist.is_dist():  # COCOEvaluator scores on rank 0: every rank returns its numbers
        shared = [metrics]
        torch.distributed.broadcast_object_list(shared, src=0)
        metrics = shared[0]
    d2.save_metrics(out / "metrics.json", metrics)
    return metrics
