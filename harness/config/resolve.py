"""Resolve (method name, preset, ``key=value`` overrides) into one JSON-able run config, hash
it, build from it.

The resolved config has the sections ``method, base, preset, seed, model, heads, recipe,
addons, train, data, views``, one section per evaluation (``EVALUATIONS``: linear, knn, …)
and ``runtime``. Everything that changes what a pretraining run computes is hashed; where it
runs and where files live (``runtime``) is not, so moving a results directory or re-running
on another cluster finds the same results, and evaluation sections are not either: each
evaluation job hashes the sections it reads (``harness.run.planning``), so ``linear.epochs=90``
re-runs the linear probe of the same pretrained run.

Overrides address the resolved config by dotted path (``train.batch_size=1024``,
``recipe.base_lr=1.5e-4``, ``linear.epochs=90``, ``runtime.num_workers=10``); values are
parsed as YAML by OmegaConf and checked against the type of the value they replace. The
resolved config is then checked against the ranges and relations of ``harness.config.checks``
(so ``harness config``, ``plan``, ``run`` and every job refuse the same settings). An unknown
key, a value of the wrong type or out of range, or a malformed argument is one
``HarnessError`` line.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.config import presets
from harness.config.checks import validate
from harness.config.evaluations import EVALUATIONS
from harness.data.addon_views import SER_DATA
from harness.data.views import POLICIES, choose, require_policy
from harness.errors import HarnessError
from harness.io import _atomic
from methods.registry import parse, view_policy

# Where and how a run executes; never hashed. None means "the job decides": num_workers the
# profile's on Slurm (its ``runtime:`` mapping, else cpus_per_task - 1), elsewhere the cores
# the process may use minus one (its CPU affinity shared among torchrun's local ranks or the
# node's Slurm tasks; ``harness.data.loading.default_workers``); threads torch's default;
# checkpoints every ckpt_minutes of training.
RUNTIME: dict[str, Any] = {
    "num_workers": None,  # DataLoader workers per process (pretraining and every evaluation)
    "threads": None,  # torch threads per process
    "ckpt_every": None,  # steps between checkpoints (besides ckpt_minutes)
    "ckpt_minutes": 30.0,  # minutes of training between checkpoints (0: only end/preemption)
    "gpu_augment": None,  # photometric augmentation batched on the GPU (None: when CUDA is there)
    "log_every": 20,  # steps between reading the loss back from the device (log, bar, NaN check)
    "compile": False,  # torch.compile the backbone
    "tf32": True,  # TF32 matmuls/convolutions on CUDA (bf16 autocast covers most of the step)
    "quiet": False,  # no progress bars
    "wandb": False,  # log to wandb (offline unless WANDB_MODE says otherwise)
    "results_dir": None,
    "data_root": None,
}
# The type of settings whose value may be None (an override must be one of these, or null).
OPTIONAL: dict[str, type] = {
    "train.max_steps": int,
    "views.crop_min": float,
    "recipe.clip": float,
    "finetune.clip_grad": float,
    "finetune.auto_augment": str,
    "runtime.num_workers": int,
    "runtime.gpu_augment": bool,
    "runtime.threads": int,
    "runtime.ckpt_every": int,
    "runtime.wandb": bool,
    "runtime.results_dir": str,
    "runtime.data_root": str,
}
# Sections left out of the run's hash.
UNHASHED = ("runtime", *EVALUATIONS)
# Top-level entries no override may set, and where they are set instead.
FIXED = {
    "method": "the method is the METHOD argument (or the table's rows)",
    "base": "the base method is the first part of the method name",
    "preset": "the preset is --preset",
    "versions": "versions are the methods' own (their class attribute ``version``)",
    "addons": "add-on options are modifiers of the method name, e.g. moco_v3+ser@r0.05@layer6 "
    "(harness methods lists them)",
}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def resolve(
    method: str,
    preset: str = "tiny",
    seed: int = 0,
    overrides: Sequence[str] = (),
    **train: Any,
) -> dict:
    """The run config of ``method`` at ``preset`` with ``key=value`` ``overrides`` applied.

    ``**train`` is a shortcut for ``train.KEY=value`` overrides (``max_steps=4``), applied
    before ``overrides``.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    p = presets.get(preset)
    base_cls, addons = parse(method)
    requires = [r for c, _ in addons for r in c.requires]
    recipe = {**base_cls.recipe, **p["recipe"], **p["recipe_by_base"].get(base_cls.name, {})}
    addon_cfgs = []
    for cls, opts in addons:
        # Scale overrides for an add-on also hold for its variants (ser → ser_detached).
        names = [c.name for c in cls.__mro__ if "name" in c.__dict__]
        scale = next((p["addons"][n] for n in names if n in p["addons"]), {})
        addon_cfgs.append({"name": cls.name, "options": {**scale, **opts}})
    cfg = {
        "method": method.strip(),
        "base": base_cls.name,
        "preset": preset,
        "seed": seed,
        "model": {**p["model"], **base_cls.backbone_options()},
        "heads": dict(p["heads"]),
        "recipe": recipe,
        "addons": addon_cfgs,
        # The code's own word on its math: a method's or add-on's version bump re-keys runs.
        "versions": {base_cls.name: base_cls.version, **{c.name: c.version for c, _ in addons}},
        "train": dict(p["train"]),
        "data": dict(p["data"]),
        "views": {**p["views"], "policy": choose(requires, view_policy(method))},
        **{name: copy.deepcopy(p[name]) for name in EVALUATIONS},
        "runtime": dict(RUNTIME),
    }
    given = [f"train.{k}={json.dumps(v)}" for k, v in train.items()] + list(overrides)
    hint = f"harness config {cfg['method']} --preset {preset} lists every key"
    cfg = apply_overrides(cfg, given, hint)
    policy = cfg["views"]["policy"]
    try:
        require_policy(cfg["method"], requires, policy)
    except HarnessError as e:
        named = view_policy(method) or choose(requires, None)
        raise HarnessError(f"views.policy={policy}: {e}" if policy != named else str(e)) from None
    n_views = POLICIES[policy]["n_views"]
    if n_views not in base_cls.invariance_views:
        takes = " or ".join(map(str, base_cls.invariance_views))
        fits = [n for n, d in POLICIES.items() if d["n_views"] in base_cls.invariance_views]
        raise HarnessError(
            f"{cfg['method']}: view policy '{policy}' hands {n_views} views to "
            f"{base_cls.name}'s invariance_loss, which takes {takes}: use a policy with "
            f"{takes} ({', '.join(fits)}), or declare invariance_views on the method"
        )
    return validate(cfg, hint)


def apply_overrides(cfg: dict, overrides: Sequence[str], hint: str = "") -> dict:
    """``cfg`` with each ``key=value`` of ``overrides`` set, validated (a new dict)."""
    if not overrides:
        return cfg
    from omegaconf import OmegaConf

    leaves = _leaves({k: v for k, v in cfg.items() if k not in FIXED})
    conf = OmegaConf.create(cfg)
    OmegaConf.set_struct(conf, True)  # unknown keys are refused, as a backstop
    for given in overrides:
        key, value = _parse(given, hint)
        arg = _shown(given)
        if key.split(".")[0] in FIXED:
            raise HarnessError(f"{arg}: cannot be overridden: {FIXED[key.split('.')[0]]}")
        if key not in leaves:
            raise HarnessError(_unknown(key, leaves, hint))
        OmegaConf.update(conf, key, _typed(arg, key, value, leaves[key], hint), merge=False)
    return OmegaConf.to_container(conf)


def _parse(arg: str, hint: str) -> tuple[str, Any]:
    from omegaconf import OmegaConf

    key, eq, raw = str(arg).partition("=")
    key = key.strip(" ")
    if not eq or not _KEY.fullmatch(key):
        raise HarnessError(
            f"cannot read setting {_shown(arg, quote=True)}: write KEY=VALUE with a dotted key, "
            f"e.g. train.batch_size=256 ({hint})"
        )
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}"]))["v"]
    except Exception:  # the YAML grammar's errors span lines
        raise HarnessError(
            f"{_shown(arg)}: cannot parse {_shown(raw, quote=True)} (write a number, "
            f"true/false, null, a list [a, b], or quote a string; {hint})"
        ) from None
    return key, value


def _shown(arg: str, quote: bool = False) -> str:
    """``arg`` as an error message may show it: escaped (its repr) if it holds a newline or
    another unprintable character, so the message stays one line."""
    arg = str(arg)
    if not arg.isprintable():
        return repr(arg)
    return f"'{arg}'" if quote else arg


def _leaves(d: dict, prefix: str = "") -> dict[str, Any]:
    """Every addressable setting by dotted path (lists are values, not sections)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_leaves(v, path + "."))
        else:
            out[path] = v
    return out


def _unknown(key: str, leaves: dict, hint: str) -> str:
    sections = sorted({k.split(".")[0] for k in leaves if "." in k})
    if key in sections:
        keys = [k for k in leaves if k.startswith(key + ".")]
        return (
            f"'{key}' is a section, not a setting: set one of its keys, e.g. "
            f"{keys[0]}=… ({', '.join(keys[:6])}{', …' if len(keys) > 6 else ''}; {hint})"
        )
    section = key.split(".")[0]
    same = [k for k in leaves if k.startswith(section + ".")]
    close = _closest(key, same) or _closest(key, list(leaves))
    if close:
        guess = " or ".join([", ".join(close[:-1]), close[-1]] if len(close) > 1 else close)
        return f"unknown setting '{key}': did you mean {guess}? ({hint})"
    if same:
        shown = ", ".join(same[:8]) + (", …" if len(same) > 8 else "")
        return f"unknown setting '{key}': '{section}' has {shown} ({hint})"
    return f"unknown setting '{key}': the sections are {', '.join(sections)} ({hint})"


def _closest(key: str, candidates: list[str]) -> list[str]:
    """The candidates nearly as close to ``key`` as the closest one (at most three)."""
    score = {c: difflib.SequenceMatcher(None, key, c).ratio() for c in candidates}
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    return [c for c in close if score[c] >= score[close[0]] - 0.05]


_NAMES = {int: "an int", float: "a float", bool: "a boolean", str: "a string", list: "a list"}


def _typed(arg: str, key: str, value: Any, current: Any, hint: str) -> Any:
    """``value`` as the type of the setting it replaces, or a one-line error."""
    want = OPTIONAL.get(key) if current is None else type(current)
    if isinstance(current, tuple):
        want = list
    if want is None:  # None by default and of no declared type: any plain value
        if isinstance(value, dict):
            raise HarnessError(f"{arg}: expected a single value, got a mapping ({hint})")
        return value
    if value is None:
        if current is None or key in OPTIONAL:
            return None
        raise HarnessError(f"{arg}: expected {_NAMES.get(want, want.__name__)}, got null ({hint})")
    ok = _convert(value, want)
    if ok is _BAD:
        raise HarnessError(
            f"{arg}: expected {_NAMES.get(want, want.__name__)} like the current "
            f"{json.dumps(current) if current is not None else 'null'}, got {value!r} ({hint})"
        )
    if want is list and current:
        kinds = {type(x) for x in current}
        if len(kinds) == 1 and kinds <= {int, float, str}:
            (kind,) = kinds
            items = [_convert(x, kind) for x in ok]
            if any(x is _BAD for x in items):
                raise HarnessError(
                    f"{arg}: expected a list of {kind.__name__}s like the current "
                    f"{json.dumps(current)}, got {value!r} ({hint})"
                )
            ok = items
    return ok


_BAD = object()


def _convert(value: Any, want: type) -> Any:
    if want is bool:
        return value if isinstance(value, bool) else _BAD
    if isinstance(value, bool):
        return _BAD
    if want is int:
        return value if isinstance(value, int) else _BAD
    if want is float:
        return float(value) if isinstance(value, (int, float)) else _BAD
    if want is str:
        return str(value) if isinstance(value, (str, int, float)) else _BAD
    if want is list:
        return list(value) if isinstance(value, list) else _BAD
    return value if isinstance(value, want) else _BAD


def config_hash(cfg: dict) -> str:
    """The hash of what a pretraining run computes: everything but ``runtime`` and the
    evaluation sections."""
    hashed = {k: v for k, v in cfg.items() if k not in UNHASHED}
    if "data" in hashed and not hashed["data"].get("skip_bad", True):
        # Off, the default, changes nothing a finished run computed (a bad image stops it):
        # left out, so runs keep the ids they had before the setting existed.
        hashed["data"] = {k: v for k, v in hashed["data"].items() if k != "skip_bad"}
    if "views" in hashed and not any(a["name"] in SER_DATA for a in cfg.get("addons", [])):
        # Without +AugSelf / +STL / +EquiMod it changes nothing: left out, so those runs keep
        # their ids; an add-on that has SER's own loader is keyed by it.
        hashed["views"] = {k: v for k, v in hashed["views"].items() if k != "addon_data"}
    if "views" in hashed and not POLICIES.get(hashed["views"].get("policy"), {}).get("n_local"):
        # Without local crops neither the crops' pipeline nor MoCo-v3's 2+4 loss scale changes
        # anything: left out, so two-view runs keep their ids; 2+4 runs are keyed by both.
        hashed["views"] = {k: v for k, v in hashed["views"].items() if k != "local_crops"}
        if "multicrop_scale" in hashed.get("recipe", {}):
            hashed["recipe"] = {k: v for k, v in hashed["recipe"].items() if k != "multicrop_scale"}
    blob = json.dumps(hashed, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_id(cfg: dict) -> str:
    slug = cfg["method"].replace("+", "_").replace("@", "-")
    return f"{slug}-{cfg['preset']}-{config_hash(cfg)}"


def with_runtime(cfg: dict, **runtime) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["runtime"] = {**cfg.get("runtime", {}), **runtime}
    return cfg


def runtime_settings(base: dict | None = None, overrides: Sequence[str] = ()) -> dict:
    """``base`` (a runtime mapping: a job's defaults, a profile's) with the ``runtime.*``
    entries of ``overrides`` applied on top, validated; the other overrides are ignored."""
    rt = {**RUNTIME, **(base or {})}
    mine = [o for o in overrides if str(o).strip().startswith("runtime.")]
    hint = "harness config METHOD lists every key"
    return validate(apply_overrides({"runtime": rt}, mine, hint), hint)["runtime"]


def to_yaml(cfg: dict) -> str:
    """A resolved config as YAML (what ``harness config`` prints and config.yaml holds)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_plain(cfg)))


def _plain(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg, default=str))


def read_stored_config(path: Path) -> tuple[dict | None, str | None]:
    """A run folder's stored config (its config.yaml) as ``(config, None)``; ``(None, None)``
    when there is none; ``(None, why)`` when it is not text, not YAML or not a mapping (other
    OS errors raise: a folder that cannot be read is no verdict on the file)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError as e:
        return None, f"{path} cannot be read ({e})"
    try:
        stored = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        return None, f"{path} is not YAML{f' at line {where.line + 1}' if where else ''}"
    if not isinstance(stored, dict):
        return None, f"{path} holds a {type(stored).__name__}, not a config mapping"
    return stored, None


def write_config(run_dir: Path, cfg: dict) -> Path:
    """Store the config a run trains with as ``run_dir/config.yaml``, atomically.

    A resumed run leaves the file as it is unless only ``runtime`` changed (then it records
    the new one); a config whose hashed part differs from the stored one's is refused.
    """
    path = Path(run_dir) / "config.yaml"
    new = _plain(cfg)
    old, why = read_stored_config(path)
    if why:
        # Bad input, not a passing fault: ``harness run`` sets such a folder aside first.
        raise HarnessError(
            f"{path} is not a config (not a YAML mapping): move the run folder aside, "
            "or re-run `harness run`, which sets it aside and trains the run again"
        )
    if old is not None:
        if old == new:
            return path
        if config_hash(old) != config_hash(new):
            raise HarnessError(
                f"{path} holds another run's config (hash {config_hash(old)}, not "
                f"{config_hash(new)}): use a fresh run directory"
            )
        if {k: v for k, v in old.items() if k != "runtime"} != {
            k: v for k, v in new.items() if k != "runtime"
        }:
            return path  # evaluation settings changed: the pretraining ran with the stored ones
    text = to_yaml(new)
    return _atomic(path, lambda f: f.write(text.encode()))
