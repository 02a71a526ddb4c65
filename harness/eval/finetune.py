"""Full fine-tuning, DeiT's recipe as MoCo-v3 uses it (spec/evals.md §7.5).

AdamW (eps 1e-8, wd 0.05 except biases, norms, [CLS] and positional embedding), lr 5e-4 ×
batch/512, 5 warm-up epochs from 1e-6 then cosine to 1e-5 (timm's scheduler, stepped per
epoch), drop-path 0.1, RandAugment rand-m9-mstd0.5-inc1, colour jitter 0.3, random erasing
0.25, Mixup 0.8 / CutMix 1.0 with label smoothing 0.1, eval Resize(size/0.875) + centre crop.
No layer-wise lr decay (DeiT has none). Every parameter is trained, including MoCo-v3's frozen
patch embedding, as after MoCo-v3's conversion to DeiT.

As DeiT's main.py runs it (facebookresearch/deit@7e160fe):

* Repeated augmentation (``repeated_aug``: 3, DeiT's ``--repeated-aug`` default): DeiT uses
  its RASampler whenever it runs distributed (main.py L212–222), and
  ``utils.init_distributed_mode`` makes it so under torch.distributed.launch/torchrun
  (RANK, WORLD_SIZE) or Slurm (SLURM_PROCID), one process or many: how its README and
  ``run_with_submitit.py`` train, and what the recipe's batch of 1024 (16 GPUs × 64) implies.
  Only a bare ``python main.py`` gets a plain RandomSampler (``repeated_aug`` 0 or 1 here).
  harness.data.samplers reproduces RASampler's global batches in one process; each repeat
  draws its own augmentation.
* The schedule: timm's CosineLRScheduler sets the warm-up start lr when built, and main.py
  calls ``lr_scheduler.step(epoch)`` after training epoch ``epoch`` (L432; the ``--resume``
  MoCo-v3 uses adds a ``step(0)`` before, L411, which sets the same lr), so epoch e trains
  at timm's lr for e − 1 and epochs 0 and 1 both at lr(0) (1e-6 with warm-up).
* The reported number (``report``: "best"): main.py evaluates val after every epoch and
  prints ``max_accuracy``, the best top-1 so far (L450; the first epoch reaching it); top-5
  is that epoch's. "last" reports the last epoch instead.

Left out: the model EMA, which DeiT keeps but does not evaluate; DeiT's fp16 autocast with a
loss scaler (bf16 autocast here, on GPUs); Mixup's per-GPU batches (one Mixup draw per
global batch here).

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
from harness.data.samplers import RepeatedAugSampler, Repeats
from harness.eval.features import eval_backbone
from harness.eval.metrics import topk
from harness.model.backbone import Backbone

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
VERSION = 2


# DeiT's recipe (``harness.config.evaluations``), the defaults of direct calls.
FINETUNE_RECIPE = EVALUATIONS["finetune"]
REPORTS = ("best", "last")


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


def train_loader(train_set, r: dict, seed: int, runtime: dict | None, device):
    """(loader, the datasets and samplers to ``set_epoch`` before each pass): DeiT's RASampler
    order when ``r["repeated_aug"]`` > 1, else a seeded shuffle. Mixup needs an even batch;
    DeiT drops the last partial batch as well."""
    repeats = int(r.get("repeated_aug") or 0)
    opts = dict(batch_size=r["batch_size"], drop_last=True, **loader_options(runtime, device))
    if repeats > 1:
        # Repeat k of image i is item k·n + i: its own augmentation seed (SeededDraws).
        draws = SeededDraws(Repeats(train_set, repeats), seed)
        sampler = RepeatedAugSampler(len(train_set), repeats, seed, keys=True)
        return DataLoader(draws, sampler=sampler, **opts), (draws, sampler)
    g = torch.Generator().manual_seed(seed)
    draws = SeededDraws(train_set, seed)  # the same augmentations whatever the workers
    return DataLoader(draws, shuffle=True, generator=g, **opts), (draws,)


def train_one_epoch(model, loader, opt, criterion, mixup, device, clip_grad) -> None:
    """One pass over ``loader`` at the optimizer's current lr (DeiT's engine.py)."""
    amp = torch.device(device).type == "cuda"
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if mixup is not None:
            x, y = mixup(x, y)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        opt.step()


def reported(history: list[tuple[int, dict]], report: str) -> dict:
    """The metrics ``report`` picks from ``[(epoch, {"top1", "top5"}), …]``, with their
    ``epoch``: "best" the first epoch of the highest top-1 (DeiT's ``max_accuracy <
    acc1``), "last" the last."""
    if report not in REPORTS:
        raise ValueError(f"report={report!r}: use one of {REPORTS}")
    if report == "last":
        epoch, m = history[-1]
    else:
        epoch, m = history[0]
        for e, cand in history[1:]:
            if cand["top1"] > m["top1"]:
                epoch, m = e, cand
    return {**m, "epoch": epoch}


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
    and the ``epoch`` (from 0) they were measured after: the best epoch's or the last's
    (``report``). ``recipe`` overrides FINETUNE_RECIPE; ``runtime`` (the job's) sizes the
    loaders. Augmentations are seeded per (seed, epoch, item) (SeededDraws) and the order
    per (seed, epoch), so neither depends on the number of workers."""
    r = {**FINETUNE_RECIPE, **recipe}
    report = r.get("report", "best")
    if report not in REPORTS:
        raise ValueError(f"finetune report={report!r}: use one of {REPORTS}")
    torch.manual_seed(seed)
    net = Backbone(dataclasses.replace(backbone.cfg, drop_path=r["drop_path"]))
    net.load_state_dict(backbone.state_dict())
    model = Classifier(net, n_classes).to(device).requires_grad_(True)
    lr = r["base_lr"] * r["batch_size"] / 512
    opt = torch.optim.AdamW(_param_groups(model, r["weight_decay"]), lr=lr, eps=1e-8)
    # Built, it sets the warm-up start lr (timm): the lr of epoch 0.
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
    loader, epoch_aware = train_loader(train_set, r, seed, runtime, device)
    history = []
    for epoch in tqdm(range(r["epochs"]), desc="fine-tune", disable=quiet, leave=False):
        for d in epoch_aware:
            d.set_epoch(epoch)
        train_one_epoch(model, loader, opt, criterion, mixup, device, r["clip_grad"])
        sched.step(epoch)  # DeiT main.py: after the epoch, so epoch e + 1 trains at lr(e)
        if report == "best" or epoch == r["epochs"] - 1:
            history.append((epoch, evaluate(model, val_set, r["batch_size"], device, runtime)))
    return reported(history, report)


def run_finetune(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: {"finetune_top1", "finetune_top5", "finetune_epoch"} (the epoch, from 0, whose
    model they score: ``report``'s); ``cfg["finetune"]`` overrides the recipe."""
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


def measure_mixup_self_pairs() -> str:
    """How often Mixup's flipped-batch partner is the image's own repeat, for ImageNet's
    1 281 167 images under repeated augmentation, epoch 0: one process with the global
    batch of 1024 (here) against DeiT on 16 GPUs × 64, whose Mixup runs per GPU batch."""
    from harness.data.samplers import RepeatedAugSampler

    stream = RepeatedAugSampler(1_281_167, 3, seed=0).order()
    steps = len(stream) // 1024
    here = stream[: steps * 1024].view(steps, 1024)
    self_here = int((here[:, :512] == here.flip(1)[:, :512]).sum())
    # DeiT: replica r's j-th image of step t is entry (t·64 + j)·16 + r of the same stream.
    deit = stream[: steps * 1024].view(steps, 64, 16).permute(0, 2, 1)  # step, gpu, j
    self_deit = int((deit[..., :32] == deit.flip(2)[..., :32]).sum())
    return (
        f"Mixup pairs that mix an image with its own repeat, epoch 0: harness {self_here} of "
        f"{steps * 512} (1 λ per step of 1024), DeiT 16×64 {self_deit} of {steps * 512} "
        f"(16 λ per step)"
    )
