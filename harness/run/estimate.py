"""``harness plan``: a table's jobs and what they will cost, before anything is submitted.

Pretraining time is (training FLOPs per image, counted on the meta device) × images seen,
divided by the GPUs' peak rate × a stated utilisation — or, when given, a measured step time.
An evaluation is priced in backbone passes over its dataset (forward, or forward + backward
where it trains the backbone), using the sizes of the real datasets (spec/evals.md).
These are estimates for budgeting, with their basis printed beside them.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import config as C
from harness.errors import HarnessError
from harness.run.profiles import job_shape

# Images in each real dataset (spec/evals.md); ImageNet-P: 10 000 sequences of 31 frames per
# perturbation is an assumption (the released count is not verified), 14 perturbations.
IMAGES = {
    "imagenet_train": 1_281_167,
    "imagenet": 50_000,
    "imagenet_v2": 10_000,
    "imagenet_sketch": 50_889,
    "imagenet_r": 30_000,
    "imagenet_c": 19 * 5 * 50_000,
    "imagenet_p": 14 * 10_000 * 31,
    "3diebench": 2_623_600,
    "coco_val": 5_000,  # val2017 (train2017's 118k enter as iterations × batch)
}
# Backbone passes per evaluation, as (passes over ImageNet train, passes over the evaluated
# set, backward too?) at the paper's recipes (harness/evaluators/*).
PASSES = {
    # 50 augmented epochs; the selection split's and val's features once each.
    "linear": (50, 2, False),
    "knn": (1, 1, False),
    "mlp": (1, 1, False),
    # DeiT scores val after every epoch (the best epoch is reported).
    "finetune": (300, 300, True),
    # 1000 images × 3 transformations × the two views (g1·x, g2·x) of a sampled pair.
    "equivariance": (0, 0.12, False),
    # 2 models (trained, random-init) × 2 views × 5 D4 elements × (100 per class of 1000
    # classes + 50 000 val): 3.0M passes.
    "transform_probe": (0, 60, False),
    "tsne": (0, 0.02, False),
    "params": (0, 0, False),  # counted on the meta device
}


@cache
def forward_flops(preset: str) -> float:
    """Forward FLOPs of the backbone on one image (meta device: no data, no compute)."""
    cfg = C.resolve("moco_v3", preset)
    with torch.device("meta"):
        bb = C.build_method(cfg).backbone
    s = cfg["model"]["img_size"]
    with FlopCounterMode(display=False) as fc:
        bb(torch.empty(1, 3, s, s, device="meta"), taps=set())
    return fc.get_total_flops()


@cache
def forward_flops_at(preset: str, size: int) -> float:
    """Forward FLOPs of the backbone on one ``size``-px image (the detection input)."""
    cfg = C.resolve("moco_v3", preset)
    with torch.device("meta"):
        bb = C.build_method(cfg).backbone
    depth = cfg["model"]["depth"]
    with FlopCounterMode(display=False) as fc:
        bb(torch.empty(1, 3, size, size, device="meta"), taps={depth})
    return fc.get_total_flops()


def detection_head_flops(cfg: dict) -> float:
    """Forward FLOPs per training image of ViTDet's trainable part (counted by hand): the
    simple feature pyramid (1×1 and 3×3 convs to 256 channels on each level, the
    transposed convs of the finer levels) and the 4conv+1fc box head on each sampled RoI."""
    det, m = cfg["detection"], cfg["model"]
    size, p, d = det["input_size"], m["patch_size"], m["width"]
    macs = 0.0
    for scale, c_in in ((4, d // 4), (2, d // 2), (1, d), (0.5, d)):
        hw = (size * scale / p) ** 2
        macs += hw * (c_in * 256 + 256 * 256 * 9)
    macs += (size / p) ** 2 * (4 * d * d // 2 + 4 * (d // 2) * (d // 4) * 4)  # deconvs, approx.
    macs += (size / (2 * p)) ** 2 * 256 * 256 * 9 * 0.5 * 2  # RPN convs on all levels, approx.
    macs += det["roi_per_image"] * (4 * 256 * 256 * 9 * 49 + 256 * 49 * 1024)
    return 2 * macs


def _gpus(shape: dict) -> int:
    per_node = shape.get("gpus_per_node") or 0
    return max(1, (shape.get("nodes") or 1) * per_node)


def estimate(
    jobs,
    preset: str,
    profile: dict,
    step_time: float | None = None,
    loader_img_s: float | None = None,
) -> list[dict]:
    """Hours per job. ``loader_img_s`` (source images/s one loader worker delivers, from
    ``harness bench loader``) caps a pretraining at what the profile's workers can feed."""
    from harness.instruments.flops import config_step_flops

    tflops = profile.get("gpu_tflops")
    if not tflops and not step_time:
        raise HarnessError(
            "the profile has no gpu_tflops (peak dense bf16 TFLOP/s of one GPU, e.g. "
            "312 for an A100, 989 for an H100): add it, or pass --step-time SECONDS"
        )
    util = profile.get("utilization") or 0.4
    rate = (tflops or 0) * 1e12 * util  # FLOP/s reached by one GPU
    rows = []
    for j in jobs:
        shape = job_shape(profile, j.kind)
        gpus = _gpus(shape)
        if j.kind == "pretrain":
            tr = j.cfg["train"]
            n_train = (
                IMAGES["imagenet_train"]
                if j.cfg["data"]["dataset"] == "imagenet"
                else j.cfg["data"]["n_classes"] * j.cfg["data"]["train_per_class"]
            )
            steps = (n_train // tr["batch_size"]) * tr["epochs"]
            if tr.get("max_steps"):
                steps = min(steps, tr["max_steps"])
            if step_time:
                hours, basis = steps * step_time / 3600, f"{steps} steps × {step_time:g} s"
            else:
                per_gpu = max(1, tr["batch_size"] // gpus)
                flops = config_step_flops(j.cfg, per_gpu) * tr["batch_size"] * steps
                hours = flops / (rate * gpus) / 3600
                basis = f"{flops / 1e18:.1f} EFLOP at {util:.0%} of {tflops:g} TFLOP/s"
            if loader_img_s:
                workers = max(1, (profile.get("runtime") or {}).get("num_workers") or 1)
                fed = loader_img_s * workers  # images/s reaching one GPU
                need = steps * tr["batch_size"] / gpus / (hours * 3600)
                if fed < need:
                    hours = steps * tr["batch_size"] / gpus / fed / 3600
                    basis = (
                        f"loader-bound: {workers} workers × {loader_img_s:g} img/s = {fed:.0f} "
                        f"img/s per GPU, the GPU takes {need:.0f} ({basis})"
                    )
        elif j.evaluation == "detection":
            # The frozen encoder forward on every training and val image at the detection
            # input size, plus the pyramid and heads' forward and backward (×3) in training.
            det = j.cfg["detection"]
            n_val = IMAGES["coco_val"] if det.get("fixture") is None else det["fixture"]["val"]
            images = det["iterations"] * det["batch_size"]
            enc = forward_flops_at(preset, det["input_size"])
            flops = enc * (images + n_val) + 3 * detection_head_flops(j.cfg) * images
            hours = flops / (rate * gpus) / 3600 if rate else float("nan")
            basis = (
                f"{images / 1e6:.2f}M frozen forward passes at {det['input_size']} px "
                f"+ pyramid/heads fwd+bwd ({flops / 1e18:.2f} EFLOP)"
            )
        else:
            train_passes, set_passes, backward = PASSES[j.evaluation]
            if j.evaluation == "linear" and j.dataset != "imagenet":
                train_passes = 0  # read with the ImageNet head; 3DIEBench's probe is on features
            images = train_passes * IMAGES["imagenet_train"] + set_passes * IMAGES.get(
                j.dataset, 50_000
            )
            flops = forward_flops(preset) * images * (3 if backward else 1)
            hours = flops / (rate * gpus) / 3600 if rate else float("nan")
            basis = f"{images / 1e6:.1f}M backbone {'fwd+bwd' if backward else 'forward'} passes"
        rows.append(
            {
                "job": j.name,
                "kind": j.kind,
                "gpus": gpus,
                "hours": hours,
                "gpu_hours": hours * gpus,
                "basis": basis,
            }
        )
    return rows


def render(rows: list[dict], header: str) -> str:
    w = max(len(r["job"]) for r in rows)
    out = [header, f"{'job':<{w}}  {'kind':<8} {'GPUs':>4} {'hours':>8} {'GPU-h':>9}  basis"]
    for r in rows:
        out.append(
            f"{r['job']:<{w}}  {r['kind']:<8} {r['gpus']:>4} {r['hours']:>8.1f} "
            f"{r['gpu_hours']:>9.1f}  {r['basis']}"
        )
    pre = sum(r["gpu_hours"] for r in rows if r["kind"] == "pretrain")
    ev = sum(r["gpu_hours"] for r in rows if r["kind"] == "eval")
    out.append(
        f"total: {len(rows)} jobs, {pre + ev:,.0f} GPU-hours "
        f"({pre:,.0f} pretraining, {ev:,.0f} evaluation)"
    )
    return "\n".join(out)
