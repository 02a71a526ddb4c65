"""Per-layer transformation-prediction probe (Table 5; spec/evals.md §8, §4.3).

SER's Table 5 "measured the transformation label following the implementation from (Garrido
et al., 2023)" and reports classification accuracy (paper Appendix B.2). The default recipe
(``EVALUATIONS["transform_probe"]``) is that implementation, facebookresearch/SIE@54541cf
eval_angle_prediction.py with the README.md command (``--deep-end --epochs 300 --batch-size
256 --lr 0.001 --wd 0``): the frozen encoder's features of two different views of the same
image are concatenated, [f(v1), f(v2)], and SIE's 3-layer MLP head (heads.mlp_head) predicts
the RELATIVE transformation from view 1 to view 2; Adam lr 1e-3, constant, 300 epochs, batch
256, the raw features (no standardisation), the elements drawn afresh every epoch.

Tasks: "rotation", the four 90° rotations (D4(0, k), torch.rot90 k times on H×W), and
"hflip", no flip / horizontal flip (D4(1, 0)). With ``target="relative"`` every image x has
two fixed views: view A, x under the evaluation transform (resize + centre crop, as every
feature probe), and view B, a square RandomResizedCrop of x (``second_view_transform``: scale
SECOND_VIEW_SCALE, ratio 1, so the 90° rotations keep its shape) drawn once per image from its
own seed (``second_view``: SeededDraws, the same crop in every run whatever the loader workers,
another crop for every image). A training or test example is one image and two elements
g1, g2 of the task's set drawn independently and uniformly; the input is
concat(f_A(g1·x), f_B(g2·x)), the label the class of g2·g1⁻¹: (k2 − k1) mod 4 for rotation,
b1 xor b2 for hflip, so both are uniform (a head that ignores its input scores 25 % and 50 %).
The two halves always show different crops, also when g1 = g2, and the crop does not depend
on g1, g2, so g is the only label information in a pair: with one view for both halves (the
protocol's version 2) a pair with g1 = g2 had two bit-identical halves, which a head detects
without decoding any orientation (rotation about 25 % + 75 %/3 = 50 %, hflip about 100 % on
features carrying no information about g); ``equality_shortcut`` measures both pairings.
Each epoch draws one pair of elements per training image afresh (SIE draws two views per
object per epoch); the test set is one pair per val image, drawn once from TEST_PAIR_SEED,
the same pairs for every probe seed and for the random-init floor. ``target="absolute"`` is
the earlier single-image protocol on view A alone: every image under every element of the
task, label = that element. The features are cached per (view, D4 element, split, model)
(cached_features), so a pair costs no backbone pass; the relative target extracts both views,
twice the backbone passes of the absolute target (5 D4 elements × 2 views × train/val, for
the trained and the random-init encoder).
Features of layer l: the mean patch token after a LayerNorm (features.pooled_tokens).
Metric: top-1 accuracy in percent after the last epoch, mean and std over ``seeds`` heads.

Settings and the other behaviour each gives: ``head`` "mlp" | "linear"; ``epochs``;
``schedule`` "constant" | "cosine" (per epoch); ``standardize`` false | true (fixed
per-feature statistics of the training features, heads.Standardize, each view its own: the
statistics of each input dimension of the head); ``target`` "relative" | "absolute".
Absolute positional embeddings make orientation decodable even without training, so the same
probe on a randomly initialised network of the same shape is reported as the floor
(``floor``).

What stays different from SIE's code, and why:
- task/loss/metric: a D4 class with cross-entropy and accuracy where SIE regresses the
  relative 3D rotation's quaternion with MSE and reports R²: the paper reports accuracy
  ("a classification score instead of R² regression"). No setting.
- data: ImageNet images (train subset of ``per_class`` per class, val) under the D4 elements
  instead of 3DIEBench renders of an object under random 3D rotations; ViT pooled tokens of
  layer l instead of a ResNet-18's pooled output. No setting.
- views: SIE's two views are two of an object's 50 renders, which differ beyond the rotation
  (floor and light latents) and are drawn afresh every epoch, either one in either half. Here
  the nuisance between the views is a crop, view A is always the centre crop and view B
  always its image's one fixed seeded crop (features are extracted once, not per epoch). No
  setting.
- pairs: g1 and g2 are drawn independently, so g1 = g2 happens (1/4 of rotation pairs, 1/2 of
  hflip pairs) where SIE's two renders are distinct (``rng.choice(50, 2, replace=False)``):
  with distinct elements hflip's relative label would always be 1 and rotation's never 0.
  SIE composes R1⁻¹·R2 where the paper writes g2·g1⁻¹; both subgroups here are abelian, so
  the labels agree. No setting. ``pair_draw_effect`` measures the label balance.
- test pairs are seeded and fixed (SIE draws them with an unseeded RandomState per epoch);
  the heads are seeded and ``seeds`` of them averaged (SIE: one unseeded run).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from harness.config.evaluations import EVALUATIONS
from harness.data import ImageFolderDataset
from harness.data.augment import BICUBIC, MEAN, STD
from harness.data.batches import derive_seed
from harness.data.loading import SeededDraws
from harness.eval.features import cached_features, checkpoint_id, eval_backbone
from harness.eval.heads import Standardize, make_head, predict, shuffled, train_head
from harness.eval.pairs import (
    TASKS,
    TEST_PAIR_SEED,
    _stack,
    draw_pairs,
    pair_inputs,
    relative_epochs,
    relative_labels,
)
from harness.eval.transforms import eval_transform
from harness.model.backbone import Backbone
from harness.model.group import D4

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
# 2: SIE's protocol by default (MLP, 300 epochs constant, raw features, relative pairs).
# 3: relative pairs from two different views (centre crop, seeded square crop), no
#    identical halves when g1 = g2.
VERSION = 3


LAYERS = tuple(EVALUATIONS["transform_probe"]["layers"])
TARGETS = ("relative", "absolute")
# The probe proper; the rest of the section says what it is run on.
PROBE_RECIPE = {
    k: EVALUATIONS["transform_probe"][k]
    for k in ("head", "epochs", "batch_size", "lr", "schedule", "standardize", "target", "seeds")
}
# View B of the relative target: a square crop of this share of the image's area, drawn once
# per image from (SECOND_VIEW_SEED, split, image index).
SECOND_VIEW_SCALE = (0.35, 1.0)
SECOND_VIEW_SEED = 1_000_033


class Transformed(Dataset):
    """``dataset`` with a D4 element applied to every (C×H×W tensor) image."""

    def __init__(self, dataset: Dataset, d: D4):
        self.dataset, self.d = dataset, d

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return self.d.apply(x), y


class WithTransform(Dataset):
    """``dataset`` (PIL images) with ``transform`` applied to every image."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return self.transform(x), y


def second_view_transform(img_size: int) -> T.Compose:
    """View B's preprocessing: a square RandomResizedCrop (area SECOND_VIEW_SCALE of the
    image, ratio 1) resized to ``img_size``, then the evaluation transform's normalisation."""
    return T.Compose(
        [
            T.RandomResizedCrop(
                img_size, scale=SECOND_VIEW_SCALE, ratio=(1.0, 1.0), interpolation=BICUBIC
            ),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def second_view_seed(split: str) -> int:
    return derive_seed(SECOND_VIEW_SEED, "transform_probe second view", split)


def second_view(dataset: Dataset, split: str) -> SeededDraws:
    """``dataset`` (images under second_view_transform, indexed as the split's ImageFolder)
    whose image i always gets the same crop, its own: drawn from a seed derived from
    (SECOND_VIEW_SEED, split, i), whatever the order of reading or the loader workers."""
    return SeededDraws(dataset, second_view_seed(split))


def task_accuracy(
    train: Sequence[torch.Tensor],
    test: Sequence[torch.Tensor],
    head: str = PROBE_RECIPE["head"],
    epochs: int = PROBE_RECIPE["epochs"],
    batch_size: int = PROBE_RECIPE["batch_size"],
    lr: float = PROBE_RECIPE["lr"],
    schedule: str = PROBE_RECIPE["schedule"],
    standardize: bool = PROBE_RECIPE["standardize"],
    target: str = PROBE_RECIPE["target"],
    seeds: int = PROBE_RECIPE["seeds"],
    device="cpu",
    quiet: bool = True,
    hidden: int = 1024,
    train_b: Sequence[torch.Tensor] | None = None,
    test_b: Sequence[torch.Tensor] | None = None,
) -> tuple[float, float]:
    """(mean, std) over ``seeds`` of the test accuracy in percent. ``train[c]`` / ``test[c]``
    hold view A's features (N×D, the same images in the same order for every c) of the
    images under class c of the task, the c-th power of its generator (TASKS);
    ``train_b`` / ``test_b`` view B's, the same images in the same order, which
    ``target="relative"`` needs (the second half of every pair) and "absolute" ignores.
    ``hidden``: the MLP head's width (SIE's 1024; smaller only in tests)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target '{target}': {' or '.join(TARGETS)}")
    if target == "relative" and (train_b is None or test_b is None):
        raise ValueError(
            "target='relative' pairs view A with view B: pass train_b and test_b, the second "
            "view's features"
        )
    n = len(train)

    def stacked(per_class):
        return torch.stack([t.float() for t in per_class]).to(device)  # n×N×D

    tr, te = stacked(train), stacked(test)
    if standardize:
        std = Standardize(tr.flatten(0, 1))
        tr, te = std(tr), std(te)
    if target == "relative":
        tr_b, te_b = stacked(train_b), stacked(test_b)
        if tr_b.shape != tr.shape or te_b.shape != te.shape:
            raise ValueError(
                f"view B's features {tuple(tr_b.shape)}/{tuple(te_b.shape)} do not match view "
                f"A's {tuple(tr.shape)}/{tuple(te.shape)} (classes × images × dims)"
            )
        if standardize:
            std_b = Standardize(tr_b.flatten(0, 1))
            tr_b, te_b = std_b(tr_b), std_b(te_b)
        c1, c2 = draw_pairs(te.shape[1], n, torch.Generator().manual_seed(TEST_PAIR_SEED))
        vx, vy = pair_inputs(te, te_b, c1, c2), relative_labels(c1, c2, n)
    else:
        tx, ty = _stack(list(tr))
        vx, vy = _stack(list(te))
        ty = ty.to(device)
    accs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        if target == "relative":
            epoch, d = relative_epochs(tr, tr_b, batch_size, g), 2 * tr.shape[2]
        else:
            epoch, d = shuffled(tx, ty, batch_size, g), tr.shape[2]
        model = make_head(head, d, n, hidden).to(device)
        train_head(model, epoch, epochs, lr, schedule=schedule, desc="transform probe", quiet=quiet)
        pred = predict(model, vx).argmax(1).cpu()
        accs.append(100.0 * (pred == vy).float().mean().item())
    return statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def probe_layers(
    feats: dict, layers, quiet: bool = True, device="cpu", feats_b: dict | None = None, **recipe
) -> dict:
    """``feats[split][D4 element][layer]`` (view A) and ``feats_b`` (view B, the same
    structure; the relative target needs it) → {"layer<l>/<task>_pred_acc" (+ "_std")}."""
    r = {**PROBE_RECIPE, **recipe}
    out = {}
    for layer in layers:
        for task, elements in TASKS.items():
            train = [feats["train"][d][layer] for d in elements]
            test = [feats["val"][d][layer] for d in elements]
            if feats_b is not None:
                r["train_b"] = [feats_b["train"][d][layer] for d in elements]
                r["test_b"] = [feats_b["val"][d][layer] for d in elements]
            mean, std = task_accuracy(train, test, device=device, quiet=quiet, **r)
            out[f"layer{layer}/{task}_pred_acc"] = mean
            out[f"layer{layer}/{task}_pred_acc_std"] = std
    return out


def _per_class(dataset, n: int) -> list[int]:
    """The first ``n`` images of every class (an ImageFolder's ``targets``)."""
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(dataset.targets):
        if seen.get(y, 0) < n:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return keep


def probe_views(data_root: Path, img_size: int, resize: int, per_class: int, relative: bool):
    """{view: ({split: dataset}, {split: dataset id}, transform name)}: view "A", the
    evaluation transform, and with ``relative`` view "B", the seeded square crop
    (second_view); train is the first ``per_class`` images per class, val all. The views'
    ids and transform names differ, so are their cache keys."""
    from torch.utils.data import Subset

    images = {split: ImageFolderDataset(data_root, split) for split in ("train", "val")}
    keep = _per_class(images["train"], per_class)
    root = str(Path(data_root).resolve())
    ids = {"train": f"{root}:first {per_class} per class", "val": root}
    tf = eval_transform(img_size, resize)
    views = {"A": ({s: WithTransform(ds, tf) for s, ds in images.items()}, ids, repr(tf))}
    if relative:
        tf_b = second_view_transform(img_size)
        seeds = {s: second_view_seed(s) for s in images}
        views["B"] = (
            {s: second_view(WithTransform(ds, tf_b), s) for s, ds in images.items()},
            {s: f"{ids[s]}|second view seed {seeds[s]}" for s in images},
            f"{tf_b!r}|seeded per image from {SECOND_VIEW_SEED}",
        )
    # Index the training split after the seeded draw: image i's crop is its own, whatever
    # per_class selects.
    for data, _, _ in views.values():
        data["train"] = Subset(data["train"], keep)
    return views


def run_transform_probe(
    run_dir: Path, data_root: Path, cfg: dict, dataset_root: Path | None = None, quiet: bool = False
) -> dict:
    """Evaluator: the probe on the trained encoder and, under ``random_init/``, on a freshly
    initialised one (the floor). Train on ``per_class`` train images per class, test on val;
    one extraction per (view, D4 element, split, model), view B only for the relative
    target."""
    opts = cfg["transform_probe"]
    trained, device = eval_backbone(run_dir)
    layers = [l for l in opts["layers"] if l <= len(trained.blocks)]
    views = probe_views(
        data_root,
        cfg["model"]["img_size"],
        cfg["linear"]["resize"],
        opts["per_class"],
        relative=opts["target"] == "relative",
    )
    models = {"": (trained, checkpoint_id(Path(run_dir) / "checkpoint.pt"))}
    if opts["floor"]:
        torch.manual_seed(cfg.get("seed", 0))
        models["random_init/"] = (
            Backbone(trained.cfg).to(device).eval(),
            f"random-init:{trained.cfg}:{cfg.get('seed', 0)}",
        )
    recipe = {k: opts[k] for k in PROBE_RECIPE}
    elements = sorted({d for task in TASKS.values() for d in task}, key=repr)
    out = {}
    for prefix, (backbone, model_id) in models.items():
        feats = {}
        for view, (data, ids, tf_name) in views.items():
            feats[view] = {split: {} for split in data}
            for split, ds in data.items():
                for d in elements:
                    f = cached_features(
                        backbone,
                        Transformed(ds, d),
                        Path(run_dir) / "features",
                        model_id=model_id,
                        dataset_id=ids[split],
                        split=split,
                        layers=layers,
                        transform=f"{tf_name}|{d}",
                        batch_size=opts["extract_batch"],
                        device=device,
                        quiet=quiet,
                        runtime=cfg.get("runtime"),
                    )
                    feats[view][split][d] = f["layers"]
        scores = probe_layers(feats["A"], layers, quiet, device, feats_b=feats.get("B"), **recipe)
        out.update({prefix + k: v for k, v in scores.items()})
    return out
