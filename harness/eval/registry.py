"""Evaluators by (evaluation, dataset). Every evaluator has one signature,
``fn(run_dir, data_root, cfg, dataset_root=None, quiet=False) -> metrics``, takes a finished
run directory and returns metrics in percent (cosine scores, R² and rank distances in their
own units; COCO detection's AP as fractions, as Table 6 prints them). Leaves never import
each other; they share the middle layer (features, the ImageNet head, transforms) and the
bottom (metrics, heads on tensors)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from harness.errors import HarnessError
from harness.eval import (
    detection,
    equivariance,
    finetune,
    iebench,
    imagenet_c,
    imagenet_p,
    knn,
    linear,
    mlp,
    params,
    transfer,
    transform_probe,
    tsne,
)


def _transfer(dataset: str) -> Callable:
    def evaluate(run_dir, data_root, cfg, dataset_root=None, quiet=False):
        return transfer.with_imagenet_head(run_dir, data_root, cfg, dataset, dataset_root, quiet)

    evaluate.__module__ = transfer.__name__  # its math, and so its VERSION, are transfer's
    return evaluate


EVALUATORS: dict[tuple[str, str], Callable] = {
    ("linear", "imagenet"): linear.linear_probe,
    **{("linear", d): _transfer(d) for d in ("imagenet_v2", "imagenet_sketch", "imagenet_r")},
    ("linear", "imagenet_c"): imagenet_c.imagenet_c,
    ("linear", "imagenet_p"): imagenet_p.imagenet_p,
    ("linear", "3diebench"): iebench.iebench_linear,
    ("knn", "imagenet"): knn.knn_eval,
    ("mlp", "imagenet"): mlp.run_mlp_probe,
    ("finetune", "imagenet"): finetune.run_finetune,
    ("equivariance", "imagenet"): equivariance.run_equivariance,
    ("transform_probe", "imagenet"): transform_probe.run_transform_probe,
    ("tsne", "imagenet"): tsne.run_tsne,
    ("tsne", "imagenet_c"): tsne.run_tsne,
    ("detection", "coco"): detection.run_detection,
    ("params", "model"): params.run_params,
}
EVALUATIONS = sorted({e for e, _ in EVALUATORS})


def evaluator(evaluation: str, dataset: str) -> Callable:
    try:
        return EVALUATORS[evaluation, dataset]
    except KeyError:
        sets = sorted(d for e, d in EVALUATORS if e == evaluation)
        raise HarnessError(
            f"no evaluator '{evaluation}' on '{dataset}': "
            + (
                f"it reads {', '.join(sets)}"
                if sets
                else f"evaluations are {', '.join(EVALUATIONS)}"
            )
        ) from None


def evaluator_version(evaluation: str, dataset: str) -> int:
    """The ``VERSION`` of the leaf module whose math the evaluation is; it enters the result
    hash."""
    return sys.modules[evaluator(evaluation, dataset).__module__].VERSION
