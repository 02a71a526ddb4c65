"""Resolve (method name, preset) into one JSON-able run config, hash it, build from it.

Everything that changes what a run computes is in the hashed config; where it runs and
where files live (``runtime``) is not, so moving a results directory or re-running on
another cluster finds the same results.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

from harness import presets
from harness.backbone import BackboneConfig
from harness.errors import HarnessError
from harness.views import choose
from methods.registry import parse, view_policy


def resolve(method: str, preset: str = "tiny", seed: int = 0, **train_overrides) -> dict:
    p = presets.get(preset)
    base_cls, addons = parse(method)
    recipe = {**base_cls.recipe, **p["recipe"], **p["recipe_by_base"].get(base_cls.name, {})}
    addon_cfgs = []
    for cls, opts in addons:
        # Scale overrides for an add-on also hold for its variants (ser → ser_detached).
        names = [c.name for c in cls.__mro__ if "name" in c.__dict__]
        scale = next((p["addons"][n] for n in names if n in p["addons"]), {})
        addon_cfgs.append({"name": cls.name, "options": {**scale, **opts}})
    return {
        "method": method.strip(),
        "base": base_cls.name,
        "preset": preset,
        "seed": seed,
        "model": {**p["model"], **base_cls.backbone_options()},
        "dims": dict(p["dims"]),
        "recipe": recipe,
        "addons": addon_cfgs,
        "train": {**p["train"], **train_overrides},
        "data": dict(p["data"]),
        "views": {**p.get("views", {}),
                  "policy": choose([r for c, _ in addons for r in c.requires], view_policy(method))},
    }


def config_hash(cfg: dict) -> str:
    blob = json.dumps({k: v for k, v in cfg.items() if k != "runtime"}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_id(cfg: dict) -> str:
    slug = cfg["method"].replace("+", "_").replace("@", "-")
    return f"{slug}-{cfg['preset']}-{config_hash(cfg)}"


def build_method(cfg: dict):
    """The Method of a resolved config (add-ons instantiated with their resolved options)."""
    base_cls, _ = parse(cfg["method"])
    from methods.registry import ADDONS

    addons = [ADDONS[a["name"]](cfg["base"], **a["options"]) for a in cfg["addons"]]
    bcfg = BackboneConfig(**cfg["model"])
    for a in addons:
        bcfg = a.configure_backbone(bcfg)
    return base_cls(bcfg, cfg["dims"], cfg["recipe"], addons)


def data_root(cfg: dict, results_dir: Path, data_root: str | None = None) -> Path:
    """Where the run's dataset lives: generated under the results dir, or given by the user."""
    d = cfg["data"]
    if d["dataset"] == "synthetic":
        tag = f"synthetic-n{d['n_classes']}-s{d['size']}-{d['train_per_class']}x{d['val_per_class']}"
        return Path(results_dir) / "data" / tag
    root = data_root or os.environ.get("HARNESS_DATA_" + d["dataset"].upper())
    if not root:
        raise HarnessError(f"preset '{cfg['preset']}' trains on {d['dataset']}: pass --data-root "
                           f"PATH (an ImageFolder tree with train/ and val/) or set "
                           f"HARNESS_DATA_{d['dataset'].upper()}")
    return Path(root)


def dataset_root(cfg: dict, results_dir: Path, dataset: str, given: str | None = None) -> Path:
    """Where an evaluation set lives. Synthetic presets use fixture trees in the set's real
    layout, generated next to the synthetic training set; real ones read
    ``$HARNESS_DATA_<NAME>`` (e.g. HARNESS_DATA_IMAGENET_V2, HARNESS_DATA_3DIEBENCH)."""
    if dataset == "imagenet":
        return data_root(cfg, results_dir, given)
    d = cfg["data"]
    if d["dataset"] == "synthetic":
        from harness.data.fixtures import Config, write_fixtures

        # ImageNet-C corrupts every val image at each severity; the fixture keeps one in eight
        # (5 per class at tiny: enough points for Figure 5's t-SNE; 1 at micro, for speed).
        c_per_class = max(1, d["val_per_class"] // 8)
        tag = f"fixtures-n{d['n_classes']}-s{d['size']}" + (f"-c{c_per_class}" if c_per_class > 1 else "")
        fx = Config(seed=0, n_classes=d["n_classes"], size=d["size"], c_per_class=c_per_class)
        return write_fixtures(Path(results_dir) / "data" / tag, fx, only=[dataset])[dataset]
    var = "HARNESS_DATA_" + dataset.upper()
    if not os.environ.get(var):
        raise HarnessError(f"no {dataset} data for preset '{cfg['preset']}': set {var} to its root "
                           f"(`harness data check {dataset} --root PATH` validates it)")
    return Path(os.environ[var])


def ensure_data(cfg: dict, root: Path) -> None:
    d = cfg["data"]
    if d["dataset"] == "synthetic":
        from harness.data import generate

        generate(root, seed=0, n_classes=d["n_classes"], train_per_class=d["train_per_class"],
                 val_per_class=d["val_per_class"], size=d["size"])


def with_runtime(cfg: dict, **runtime) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["runtime"] = {**cfg.get("runtime", {}), **runtime}
    return cfg
