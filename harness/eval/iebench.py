"""3DIEBench's own 55-way linear probe over objects' views (spec/evals.md §4.2).

As facebookresearch/SIE@54541cf ``eval_classification.py`` runs it:

* Input (``iebench.input``): "sie", the stored 256² images through ToTensor → Normalize with
  3DIEBench's mean (0.5016, 0.5037, 0.5060) / std (0.1030, 0.0999, 0.0969), no crop, no
  resize (the ViT interpolates its positional embedding to the 16×16 grid; fixture trees
  not a multiple of the patch are trimmed to one, ``transforms.PatchCrop``); "imagenet", the
  linear probe's val transform (Resize ``linear.resize`` + CenterCrop ``model.img_size``)
  with ImageNet's statistics.
* Validation (``iebench.val_views``): "one" view per val object, as SIE's
  ``Dataset3DIEBench.__getitem__`` draws it (``self.rng.choice(50, 2, replace=False)[0]``,
  ``self.rng`` an unseeded ``np.random.RandomState`` made in ``__init__``). SIE validates
  after every epoch with a shuffled val loader of 10 workers; each worker forks a copy of
  that RandomState, so every pass repeats the same draws, dealt to objects in a new
  shuffled order: a new random view per object each epoch, and the number printed last
  (the model saved is the last epoch's) is the last epoch's draw. The probe here is scored
  once, after its last epoch, on one draw: uniform and independent per object, seeded from
  ``cfg["seed"] + 1`` (training picks use ``cfg["seed"]``); only the drawn views are
  encoded. "all": every view of every val object, the expectation of SIE's number.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import Subset

from harness.data.readers import IEBench3D
from harness.data.readers.iebench import MEAN as IE_MEAN
from harness.data.readers.iebench import STD as IE_STD
from harness.data.readers.iebench import VIEWS
from harness.errors import HarnessError
from harness.eval.features import eval_backbone, extract
from harness.eval.iebench_probes import classify_objects
from harness.eval.transforms import eval_transform, native_transform

# Bump when what this evaluator computes changes: results keyed by the old value are
# never reused.
# 2: iebench.input ("sie": stored 256 px, 3DIEBench statistics) and iebench.val_views
#    ("one" seeded view per val object) by default.
VERSION = 2

INPUTS = ("sie", "imagenet")
VAL_VIEWS = ("one", "all")


def iebench_transform(cfg: dict, patch: int):
    """The image transform ``iebench.input`` names; ``patch`` is the encoder's patch size."""
    choice = cfg["iebench"]["input"]
    if choice == "sie":
        return native_transform(patch, IE_MEAN, IE_STD, "a 3DIEBench image")
    if choice == "imagenet":
        return eval_transform(cfg["model"]["img_size"], cfg["linear"]["resize"])
    raise HarnessError(f"iebench.input={choice!r}: choose one of {', '.join(INPUTS)}")


def object_rows(views: list[tuple[str, int]], root="3DIEBench") -> list[list[int]]:
    """Sample indices per object (objects sorted, views by k); every object has as many."""
    rows = defaultdict(list)
    for i, (obj, k) in enumerate(views):
        rows[obj].append((k, i))
    counts = {len(v) for v in rows.values()}
    if len(counts) > 1:
        raise HarnessError(
            f"3DIEBench objects under {root} have different numbers of views "
            f"({sorted(counts)}): every object needs all its image_k.jpg"
        )
    return [[i for _, i in sorted(v)] for _, v in sorted(rows.items())]


def one_view_per_object(views: list[tuple[str, int]], seed: int, root="3DIEBench") -> list[int]:
    """One sample index per object (objects sorted), its view drawn uniformly with a
    generator seeded by ``seed``: SIE's one random val view per object, made repeatable."""
    rows = object_rows(views, root)
    if not rows:
        return []
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(rows[0]), (len(rows),), generator=g)
    return [r[p] for r, p in zip(rows, pick.tolist())]


def _by_object(reader: IEBench3D, feats: torch.Tensor, labels: torch.Tensor):
    """N objects × V views × D, and one label per object."""
    idx = torch.tensor(object_rows(reader.views, reader.root))
    return feats[idx], labels[idx[:, 0]]


def iebench_linear(
    run_dir: Path, data_root: Path, cfg: dict, root: Path, quiet: bool = False
) -> dict:
    lc, ic = cfg["linear"], cfg["iebench"]
    if ic["val_views"] not in VAL_VIEWS:
        raise HarnessError(
            f"iebench.val_views={ic['val_views']!r}: choose one of {', '.join(VAL_VIEWS)}"
        )
    backbone, device = eval_backbone(run_dir)
    tf = iebench_transform(cfg, backbone.cfg.patch_size)
    split = {}
    for name in ("train", "val"):
        reader = IEBench3D(root, name, transform=tf)
        n_classes = len(reader.classes)
        one = name == "val" and ic["val_views"] == "one"
        data = (
            Subset(reader, one_view_per_object(reader.views, cfg["seed"] + 1, reader.root))
            if one
            else reader
        )
        x, y = extract(
            backbone,
            data,
            lc["n_last"],
            lc["batch_size"],
            device,
            f"3DIEBench {name}",
            quiet,
            runtime=cfg.get("runtime"),
        )
        split[name] = (x[:, None], y) if one else _by_object(reader, x, y)
    (tx, ty), (vx, vy) = split["train"], split["val"]
    recipe = {k: v for k, v in ic.items() if k not in ("input", "val_views")}
    return {
        **classify_objects(
            tx, ty, vx, vy, n_classes=n_classes, seed=cfg["seed"], quiet=quiet, **recipe
        ),
        "n_objects": len(vy),
    }


def one_view_spread(objects: int = 10552, views: int = VIEWS, draws: int = 200) -> str:
    """How far SIE's one-random-view val top-1 strays from its all-view expectation: on a
    fixed table of per-view hits (3DIEBench's 10 552 val objects × 50 views, per-object hit
    rates logistic-normal, 76 % on average), the top-1 of ``draws`` seeded one-view picks."""
    g = torch.Generator().manual_seed(0)
    rate = torch.sigmoid(1.6 + 1.5 * torch.randn(objects, 1, generator=g))
    hits = (torch.rand(objects, views, generator=g) < rate).float()
    every = 100 * hits.mean().item()
    rows = torch.arange(objects)
    one = torch.stack(
        [
            hits[rows, torch.randint(views, (objects,), generator=g)].mean() * 100
            for _ in range(draws)
        ]
    )
    return (
        f"3DIEBench val top-1, one view vs all {views} views per object ({objects} objects, "
        f"{draws} draws): all {every:.2f} %, one {one.mean().item():.2f} % ± "
        f"{one.std().item():.2f} pp (SD), max |one − all| {(one - every).abs().max().item():.2f} pp"
    )


def input_effect() -> str:
    """ "sie" against "imagenet" on one stored 256² 3DIEBench-sized image: the encoder's input
    size and tokens at patch 16, and how much larger 3DIEBench's std makes the normalized
    signal than ImageNet's (the scale the encoder saw in ImageNet pretraining)."""
    from harness.data.augment import MEAN, STD

    scale = [s / t for s, t in zip(STD, IE_STD)]
    shift = [(m - n) / t for m, n, t in zip(MEAN, IE_MEAN, IE_STD)]
    return (
        f"iebench.input=sie on a 256² image: 256² px in (256 tokens at patch 16, positional "
        f"embedding interpolated from 14×14) and sie = a·imagenet + b per channel, a = "
        f"{'/'.join(f'{x:.2f}' for x in scale)}, b = {'/'.join(f'{x:+.2f}' for x in shift)}; "
        f"iebench.input=imagenet: the central 224² of Resize(256) (196 tokens)"
    )
