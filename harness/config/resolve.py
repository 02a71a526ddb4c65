"""Resolve (method name, preset) into one JSON-able run config, hash it, build from it.

Everything that changes what a run computes is in the hashed config; where it runs and
where files live (``runtime``) is not, so moving a results directory or re-running on
another cluster finds the same results.
"""

from __future__ import annotations

import copy
import hashlib
import json

from harness.config import presets
from harness.data.views import choose
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
        "views": {
            **p.get("views", {}),
            "policy": choose([r for c, _ in addons for r in c.requires], view_policy(method)),
        },
    }


def config_hash(cfg: dict) -> str:
    blob = json.dumps({k: v for k, v in cfg.items() if k != "runtime"}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_id(cfg: dict) -> str:
    slug = cfg["method"].replace("+", "_").replace("@", "-")
    return f"{slug}-{cfg['preset']}-{config_hash(cfg)}"


def with_runtime(cfg: dict, **runtime) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["runtime"] = {**cfg.get("runtime", {}), **runtime}
    return cfg
