"""Full fine-tuning, DeiT's recipe as MoCo-v3 uses it (spec/evals.md §7.5).

AdamW (eps 1e-8, wd 0.05 except biases, norms, [CLS] and positional embedding), lr 5e-4 ×
batch/512, 5 warm-up epochs from 1e-6 then cosine to 1e-5 (timm's scheduler, stepped per
epoch), drop-path 0.1, RandAugment rand-m9-mstd0.5-inc1, colour jitter 0.3, random erasing
0.25, Mixup 0.8 / CutMix 1.0 with label smoothing 0.1, eval Resize(size/0.875) + centre crop.
No layer-wise lr decay (DeiT has none). Two DeiT pieces are left out on purpose: repeated
augmentation is DeiT's *multi-process* sampler (one process gets a plain shuffle in DeiT
too), and the model EMA is kept by DeiT but not what it evaluates. Every parameter is
trained, including MoCo-v3's frozen patch embedding, as after MoCo-v3's conversion to DeiT.

The schedule and batch are arguments, so a small preset can run the same code for a few
epochs; the image size follows the backbone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm

from harness.config.evaluations import EVALUATIONS
from harness.data import ImageFolderDataset
from harness.data.loading import SeededDraws, loader_options
from harness.eval.features import eval_backbone
from harness.eval.metrics import topk
from harness.model.backbone import Backbone

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 1


# DeiT's recipe (``harness.config.evaluations``), the defaults of direct calls.
FINETUNE_RECIPE = EVALUATIONS["finetune"]


def _posterize_keeps_a_bit() -> None:
    """RandAugment's 'inc1' posterize keeps 4 - int(4·m/10) bits, i.e. 0 at m = 10, which
    m9 ± 0.5 reaches in ~2 % of draws; Pillow ≥ 10 refuses 0 bits (older ones returned a
    black image). Keep at least one bit: the one deviation from DeiT's augmentation."""
    from timm.data import auto_augment as aa

    base = aa._posterize_increasing_level_to_arg
    aa.LEVEL_TO_ARG["PosterizeIncreasing"] = lambda level, hp: (max(1, base(level, hp)[0]),)


def deit_transforms(img_size: int, r: dict):
    """(train, eval) transforms of DeiT's ``build_transform``."""
    _posterize_keeps_a_bit()
    train = create_transform(
        img_size,
        is_training=True,
        scale=tuple(r["crop_scale"]),
        color_jitter=r["color_jitter"],
        auto_augment=r["auto_augment"],
        interpolation="bicubic",
        re_prob=r["reprob"],
        re_mode="pixel",
        re_count=1,
    )
    evaluate = create_transform(
        img_size, is_training=False, interpolation="bicubic", crop_pct=r["crop_pct"]
    )
    return train, evaluate


class Classifier(nn.Module):
    """Backbone + a linear head on the final-LayerNorm [CLS] (DeiT's head)."""

    def __init__(self, backbone: Backbone, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.width, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.backbone(x).cls)


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token"))
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, batch_size: int, device, runtime: dict | None = None
) -> dict:
    """Top-1/top-5 of ``model`` on ``dataset`` (in order), loaded with the job's ``runtime``
    workers."""
    model.eval()
    logits, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, **loader_options(runtime, device)):
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    return topk(torch.cat(logits), torch.cat(labels))


def finetune(
    backbone: Backbone,
    train_set,
    val_set,
    n_classes: int,
    seed: int = 0,
    device="cpu",
    quiet: bool = True,
    runtime: dict | None = None,
    **recipe,
) -> dict:
    """Fine-tune a copy of ``backbone`` (the argument is left untouched) on ``train_set``
    (already transformed, e.g. by deit_transforms) and return val {"top1", "top5"} in percent
    after the last epoch. ``recipe`` overrides FINETUNE_RECIPE; ``runtime`` (the job's) sizes
    the loaders. The augmentations drawn depend on the number of workers (each seeds its own
    stream); the shuffle order does not."""
    r = {**FINETUNE_RECIPE, **recipe}
    torch.manual_seed(seed)
    net = Backbone(dataclasses.replace(backbone.cfg, drop_path=r["drop_path"]))
    net.load_state_dict(backbone.state_dict())
    model = Classifier(net, n_classes).to(device).requires_grad_(True)
    lr = r["base_lr"] * r["batch_size"] / 512
    opt = torch.optim.AdamW(_param_groups(model, r["weight_decay"]), lr=lr, eps=1e-8)
    sched = CosineLRScheduler(
        opt,
        t_initial=r["epochs"],
        lr_min=r["min_lr"],
        warmup_t=r["warmup_epochs"],
        warmup_lr_init=r["warmup_lr"],
    )
    mixing = r["mixup"] > 0 or r["cutmix"] > 0
    mixup = (
        Mixup(
            mixup_alpha=r["mixup"],
            cutmix_alpha=r["cutmix"],
            prob=r["mixup_prob"],
            switch_prob=r["mixup_switch_prob"],
            label_smoothing=r["smoothing"],
            num_classes=n_classes,
        )
        if mixing
        else None
    )
    if mixing:
        criterion = SoftTargetCrossEntropy()
    elif r["smoothing"] > 0:
        criterion = LabelSmoothingCrossEntropy(r["smoothing"])
    else:
        criterion = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    # Mixup needs an even batch; DeiT drops the last partial batch as well.
    draws = SeededDraws(train_set, seed)  # the same augmentations whatever the workers
    loader = DataLoader(
        draws,
        batch_size=r["batch_size"],
        shuffle=True,
        generator=g,
        drop_last=True,
        **loader_options(runtime, device),
    )
    amp = torch.device(device).type == "cuda"
    for epoch in tqdm(range(r["epochs"]), desc="fine-tune", disable=quiet, leave=False):
        sched.step(epoch)
        draws.set_epoch(epoch)
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if mixup is not None:
                x, y = mixup(x, y)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if r["clip_grad"]:
                nn.utils.clip_grad_norm_(model.parameters(), r["clip_grad"])
            opt.step()
    return evaluate(model, val_set, r["batch_size"], device, runtime)


def run_finetune(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: {"finetune_top1", "finetune_top5"}; ``cfg["finetune"]`` overrides the recipe."""
    r = cfg["finetune"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone, _ = eval_backbone(run_dir, torch.device("cpu"))
    train_tf, eval_tf = deit_transforms(cfg["model"]["img_size"], r)
    train = ImageFolderDataset(data_root, "train", transform=train_tf)
    val = ImageFolderDataset(data_root, "val", transform=eval_tf)
    m = finetune(
        backbone,
        train,
        val,
        len(train.classes),
        seed=cfg.get("seed", 0),
        device=device,
        quiet=quiet,
        runtime=cfg.get("runtime"),
        **r,
    )
    return {f"finetune_{k}": v for k, v in m.items()}
