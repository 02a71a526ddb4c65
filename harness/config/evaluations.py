"""Every evaluation's recipe at paper scale: the one place its defaults live.

The paper preset carries these sections whole; smaller presets state only what they change,
and ``key=value`` overrides address them (``linear.epochs=90``). An evaluation job's result
is keyed by the sections it reads after all of that is merged, plus its evaluator's version,
so changing a default here gives new result paths and never reuses old numbers.
"""

from __future__ import annotations

EVALUATIONS: dict[str, dict] = {
    # Linear probe (spec/evals.md §7.1) as SER's lincls_parallel.py + run_eval.sh +
    # config/eval.yaml (dbe5e93) run it: concatenated final-LN [CLS] of the last n blocks,
    # SGD m 0.9, lr = base·B/256, cosine per epoch, augmented features every epoch at 224 px;
    # one head per base lr of the row's base method (``base_lrs``; "default" for imports),
    # all fed by one feature pass; after every epoch past ``select_from`` each head is scored
    # on ``select_on`` ("val": the split reported, as SER's code; "heldout": a seeded
    # ``heldout`` share of train kept out of training) and the best (head, epoch) is the
    # probe every column reads. ``precision``: "fp16" autocast around backbone and head as
    # SER's, "fp32" none. Its extraction settings (n_last, resize, batch_size) are what k-NN,
    # the MLP probe, the equivariance score, the transformation probe and t-SNE read too.
    "linear": {
        "epochs": 50,
        "batch_size": 2048,
        # config/eval.yaml lists MoCo-v3 and Barlow Twins checkpoints only: DINO and any
        # other base (an imported checkpoint) take MoCo-v3's pair.
        "base_lrs": {
            "moco_v3": [3.0, 10.0],
            "dino": [3.0, 10.0],
            "barlow_twins": [1.0, 3.0],
            "default": [3.0, 10.0],
        },
        "select_on": "val",
        "select_from": 40,
        "heldout": 0.01,
        "precision": "fp16",
        "n_last": 4,
        "augment": True,
        "resize": 256,
    },
    # ImageNet-C and -P read with the ImageNet head: "official" feeds the stored 224² images
    # as hendrycks/robustness's test.py does (centre crop to the model's size, no resize);
    # "resize" resizes to linear.resize and crops first, as the linear probe's val.
    "robustness": {"preprocess": "official"},
    # Weighted k-NN (§7.4, DINO's knn_classifier).
    "knn": {"ks": [20], "temperature": 0.07},
    # 3-layer MLP probe (§7.3, SIE's --deep-end head on raw features). ``standardize``
    # fixes per-feature statistics before the head (MAE puts a BatchNorm without affine there).
    "mlp": {
        "epochs": 300,
        "batch_size": 256,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "hidden": 1024,
        "schedule": "constant",
        "standardize": False,
    },
    # Full fine-tuning, DeiT's recipe as MoCo-v3 uses it (§7.5).
    "finetune": {
        "epochs": 300,
        "batch_size": 1024,
        "base_lr": 5e-4,
        "weight_decay": 0.05,
        "warmup_epochs": 5,
        "warmup_lr": 1e-6,
        "min_lr": 1e-5,
        "drop_path": 0.1,
        "smoothing": 0.1,
        "mixup": 0.8,
        "cutmix": 1.0,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "color_jitter": 0.3,
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "reprob": 0.25,
        "crop_pct": 0.875,
        "crop_scale": [0.08, 1.0],
        "clip_grad": None,
        # DeiT's RASampler: every image 3 times per epoch (each with its own augmentation),
        # an epoch as long as the plain one; 0 or 1: a plain shuffle.
        "repeated_aug": 3,
        # "best": the best val top-1 over epochs, as DeiT's main.py prints; "last": the last.
        "report": "best",
    },
    # Equivariance score of token maps (§5.2); token-grid areas as SER samples them.
    "equivariance": {
        "n_images": 1000,
        "batch_size": 64,
        "layers": [],
        "areas": [0.7, 0.85, 1.15, 1.3],
        # "sampled": pairs (g1, g2) drawn per image (seeded), g = g2·g1⁻¹ (paper Appendix
        # B.2); "fixed": the fixed elements of each transformation.
        "protocol": "sampled",
    },
    # Per-layer transformation-prediction probe (§8).
    # SIE's protocol (eval_angle_prediction.py): MLP head, Adam 1e-3 constant, 300 epochs,
    # raw features, two views concatenated predicting the relative transformation.
    "transform_probe": {
        "head": "mlp",
        "epochs": 300,
        "batch_size": 256,
        "lr": 1e-3,
        "schedule": "constant",
        "standardize": False,
        "target": "relative",
        "seeds": 3,
        "layers": [1, 3, 6, 9, 12],
        "per_class": 100,
        "floor": True,
        "extract_batch": 256,
    },
    # t-SNE of 20 classes (Figures 4, 5).
    "tsne": {
        "n_classes": 20,
        "per_class": 50,
        "perplexity": 30.0,
        "corruption": "defocus_blur",
        "severity": 3,
    },
    # 3DIEBench probes on frozen features (§4.2–4.3, SIE's scripts).
    # ``input``: "sie", the stored 256-px images with 3DIEBench's mean/std, no crop;
    # "imagenet", the linear probe's resize + crop and ImageNet's statistics. ``val_views``:
    # "one" random view per object (seeded), as SIE validates; "all" 50, its expectation.
    "iebench": {
        "epochs": 300,
        "batch_size": 256,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "input": "sie",
        "val_views": "one",
    },
    # Frozen-backbone COCO detection (Table 6; §6, paper Appendix B.3): detectron2's ViTDet
    # box-only Faster R-CNN (simple feature pyramid on the last block's token map, RPN with
    # 2 convs, 4conv+1fc box head, LN) on the frozen encoder, 45 000 iterations at batch 32.
    # ViTDet's recipe otherwise: LSJ input (scale 0.1–2.0, 1024 px crops), AdamW 1e-4 with
    # weight decay 0.1 (none on norms), 250 warm-up iterations, lr ×0.1 at the same fractions
    # of the schedule as ViTDet's 163 889 and 177 546 of 184 375, mixed precision on GPUs.
    "detection": {
        "iterations": 45_000,
        "batch_size": 32,
        "input_size": 1024,
        "scale_range": [0.1, 2.0],
        "lr": 1e-4,
        "weight_decay": 0.1,
        "warmup_iters": 250,
        "lr_steps": [0.889, 0.963],
        "rpn_per_image": 256,
        "roi_per_image": 512,
        "pre_nms_topk": [2000, 1000],  # RPN proposals kept (train, test) before NMS
        "post_nms_topk": [1000, 1000],  # and after
        "amp": True,
        "checkpoint_period": 1000,
        # Synthetic presets: the COCO-layout fixture's image size, train/val images and
        # objects per image at most (None: read $HARNESS_DATA_COCO).
        "fixture": None,
    },
}

# Which sections an evaluation reads besides its own (feature extraction follows ``linear``).
READS: dict[str, tuple[str, ...]] = {
    "linear": ("linear",),
    "knn": ("knn", "linear"),
    "mlp": ("mlp", "linear"),
    "finetune": ("finetune",),
    "equivariance": ("equivariance", "linear"),
    "transform_probe": ("transform_probe", "linear"),
    "tsne": ("tsne", "linear"),
    "detection": ("detection",),
    "params": (),
}
# 3DIEBench's linear column trains its own probe on the linear probe's features.
READS_BY_DATASET: dict[tuple[str, str], tuple[str, ...]] = {
    ("linear", "3diebench"): ("linear", "iebench"),
    ("linear", "imagenet_c"): ("linear", "robustness"),
    ("linear", "imagenet_p"): ("linear", "robustness"),
    ("tsne", "imagenet_c"): ("tsne", "linear", "robustness"),
}


def sections_read(evaluation: str, dataset: str) -> tuple[str, ...]:
    return READS_BY_DATASET.get((evaluation, dataset), READS[evaluation])
