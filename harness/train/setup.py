"""What a pretraining run is built from: the process settings, the method on its device,
the optimiser, the batches and the step count, and the progress bar."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness.config import build_method, run_id, write_config
from harness.data import ImageFolderDataset
from harness.data.batches import PretrainBatches, build_policy
from harness.errors import HarnessError
from harness.model.backbone import Backbone
from harness.parallel import dist
from harness.parallel.global_bn import global_batchnorm


def make_optimizer(method, device: torch.device):
    """AdamW over the method's parameter groups (lr and decay are set every step), fused on
    CUDA; and the groups' specs (lr scale, weight decay)."""
    groups = method.param_groups()
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW([dict(g) for g in groups], lr=0.0, **fused), groups


def compile_backbones(method) -> None:
    """torch.compile every backbone of a method (online, momentum, teacher) in place
    (nn.Module.compile): parameter names, hence checkpoints, stay the same."""
    for m in method.modules():
        if isinstance(m, Backbone):
            m.compile()


@dataclass
class Setup:
    """One run's trainer before its first step (and before any resume)."""

    rt: dict
    device: torch.device
    lead: bool  # only rank 0 writes files
    method: torch.nn.Module
    opt: torch.optim.Optimizer
    groups: list
    batches: PretrainBatches
    steps_per_epoch: int
    total: int
    amp: dict | None  # autocast kwargs, or None off CUDA
    skip_bad: bool


def setup(cfg: dict, run_dir: Path, data_root: Path) -> Setup:
    """Everything up to the resume, in this order: the seeds are set before the method is
    built, so its initial weights are a function of ``cfg['seed']`` alone."""
    rt = cfg.get("runtime", {})
    run_dir.mkdir(parents=True, exist_ok=True)
    if rt.get("threads"):
        torch.set_num_threads(rt["threads"])
    dist.init_from_env()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    lead = dist.rank() == 0
    if lead:
        write_config(run_dir, cfg)  # the fully resolved config it runs with, runtime included
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])

    if device.type == "cuda" and rt.get("tf32", True):
        # Whatever bf16 autocast leaves in fp32 (losses, heads' norms) runs on tensor cores.
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    method = build_method(cfg).to(device)
    # The specs' BatchNorms use global-batch statistics (SyncBatchNorm on CUDA, ours on CPU).
    method = global_batchnorm(method, device)
    if rt.get("compile"):
        compile_backbones(method)
    policy = build_policy(method, cfg)
    gpu_augment = rt.get("gpu_augment")
    # Workers decode and crop; the photometric part runs batched on the GPU (``finish``).
    policy.defer = device.type == "cuda" if gpu_augment is None else bool(gpu_augment)
    tr = cfg["train"]
    images = ImageFolderDataset(data_root, "train")
    skip_bad = bool(cfg["data"].get("skip_bad"))
    batches = PretrainBatches(images, policy, tr["batch_size"], cfg["seed"], skip_bad)
    spe = batches.steps_per_epoch
    if spe == 0:
        raise HarnessError(
            f"{data_root}/train has {len(images)} images, fewer than one batch of "
            f"{tr['batch_size']}: use a smaller preset or a larger dataset"
        )
    total = spe * tr["epochs"]
    if tr.get("max_steps"):
        total = min(total, tr["max_steps"])

    opt, groups = make_optimizer(method, device)
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    return Setup(rt, device, lead, method, opt, groups, batches, spe, total, amp, skip_bad)


def progress_bar(cfg: dict, s: Setup, start: int) -> tqdm:
    """The run's bar, rank 0 only, counting from the step it resumed at."""
    return tqdm(
        total=s.total,
        initial=start,
        desc=run_id(cfg),
        disable=s.rt.get("quiet", False) or not s.lead,
        dynamic_ncols=True,
        mininterval=1.0,
    )
