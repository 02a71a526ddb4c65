"""Published and foreign checkpoints read into the harness Backbone's state dict, one reader
per key layout; nothing is written here (``harness.checkpoints.exchange`` makes runs of them).

Key layouts (from the public model definitions):

- ``dino``: facebookresearch/dino ``vision_transformer.py`` names (timm's), a backbone-only
  state dict (the released ``dino_deitsmall16_pretrain.pth``) or the training checkpoint
  (``student`` with ``module.backbone.``/``module.head.``, ``teacher`` with ``backbone.``/
  ``head.``, ``optimizer``, ``epoch``, ``args``, ``dino_loss``, ``fp16_scaler``); teacher by
  default (``branch=student`` for the other);
- ``moco_v3``: ``state_dict`` with ``module.base_encoder.``/``module.momentum_encoder.``
  (timm ViTs whose ``head`` is the projector) and ``module.predictor.``; the base encoder by
  default (``encoder=momentum``), 12 heads for ViT-S, the fixed 2-D sin-cos embedding;
- ``timm``: a timm ``VisionTransformer`` state dict (``head.*`` is the classifier, skipped);
- ``ser``: the public SER code's checkpoint (``student``/``teacher`` state dicts of its
  ``vision_transformer.py``, 196 positional entries without a [CLS] slot in SER mode,
  ``norm_equiv``, the [CLS] layer = ``args.equiv_layer``); teacher by default;
- ``harness``: another harness run's ``checkpoint.pt`` (its evaluated backbone).

Every key of the source is either loaded or deliberately skipped (heads, optimiser state, the
other branch); a missing, unexpected or mis-shaped backbone key stops with one line naming it.

Files are read with ``weights_only=True`` (``harness.config.build.safe_load``): what these
layouts hold besides tensors (DINO's and SER's ``argparse.Namespace``, numpy arrays, SER's heads
as ``torch.nn`` layers) is allowed by name; anything else is refused before it can run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from harness.config.build import UnsafeFile, safe_load
from harness.errors import HarnessError
from harness.model.backbone import Backbone, BackboneConfig

FORMATS = ("dino", "moco_v3", "timm", "ser", "harness")
# Options each format takes besides ``model.KEY=value``, and their allowed values.
OPTIONS = {
    "dino": {"branch": ("teacher", "student")},
    "moco_v3": {"encoder": ("base", "momentum")},
    "timm": {},
    "ser": {"branch": ("teacher", "student")},
    "harness": {},
}
# What ``model.KEY=value`` may set: any BackboneConfig field (heads, cls_layer, img_size, …).
_MODEL_FIELDS = {f.name: f.type for f in fields(BackboneConfig)}


def _load(path: Path):
    try:
        if path.suffix == ".safetensors":  # tensors only, nothing to unpickle
            from safetensors.torch import load_file

            return load_file(str(path))
        return safe_load(path, published=True)
    except UnsafeFile:
        raise
    except Exception as e:  # not a torch file, cut short
        raise HarnessError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''}): check the path and the download"
        ) from None


class _Source:
    """What a converter found: backbone tensors under the harness Backbone's names, where each
    came from, what was skipped and why, and architecture hints the tensors do not carry."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.tensors: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}  # backbone key -> the file's key
        self.skipped: dict[str, str] = {}  # the file's key -> why it is not loaded
        self.hints: dict = {}

    def take(self, file_key: str, name: str, value) -> None:
        """``value`` (the file's ``file_key``) as timm ViT key ``name`` (or ``norm_equiv.*``)."""
        if not isinstance(value, torch.Tensor):
            raise HarnessError(
                f"{self.path}: key '{file_key}' is a {type(value).__name__}, not a tensor: "
                f"not a {self.fmt} backbone state dict (check --format)"
            )
        key = name if name.startswith("norm_equiv.") else f"vit.{name}"
        self.tensors[key] = value
        self.origin[key] = file_key

    def skip(self, file_key: str, why: str) -> None:
        self.skipped[file_key] = why

    def unexpected(self, file_key: str, what: str = "") -> HarnessError:
        return HarnessError(
            f"{self.path}: unexpected key '{file_key}' for format {self.fmt}"
            f"{f' ({what})' if what else ''}: not a backbone, head or training-state entry of "
            f"that layout; check --format, or the file is not what its name says"
        )


def _top(src: _Source, obj, known: dict[str, str], inner: tuple[str, ...]) -> None:
    """Skip the known top-level entries of a training checkpoint; any other is an error."""
    for k in obj:
        if k in inner:
            continue
        if k not in known:
            raise src.unexpected(str(k), "top-level entry")
        src.skip(str(k), known[k])


def _tensors_of(src: _Source, obj, what: str) -> dict:
    if not isinstance(obj, dict) or not obj:
        raise HarnessError(f"{src.path}: {what} is not a state dict (check --format {src.fmt})")
    return obj


def _bare(src: _Source, sd: dict, prefix: str = "") -> None:
    """A timm-named backbone state dict: ``head.*`` skipped, everything else taken."""
    for k, v in sd.items():
        name = k[len(prefix) :] if prefix and k.startswith(prefix) else k
        if name.startswith("head.") or name.startswith("head_"):
            src.skip(k, "classification/projection head (evaluations probe the backbone)")
        else:
            src.take(k, name, v)


def _branches(src: _Source, obj: dict, opts: dict, kind: str) -> tuple[str, str]:
    """(the branch imported, the other) of a teacher/student checkpoint (DINO's, SER's)."""
    branch = opts.get("branch", "teacher")
    if not isinstance(obj.get(branch), dict):
        raise HarnessError(f"{src.path}: no '{branch}' state dict in this {kind} checkpoint")
    return branch, "student" if branch == "teacher" else "teacher"


def _read_dino(src: _Source, obj, opts: dict) -> None:
    if isinstance(obj, dict) and ("teacher" in obj or "student" in obj):
        branch, other = _branches(src, obj, opts, "DINO")
        _top(
            src,
            obj,
            {
                other: f"the {other} network (branch={branch} is imported)",
                "optimizer": "optimiser state",
                "epoch": "training progress",
                "args": "training arguments",
                "dino_loss": "DINO loss state (the centre)",
                "fp16_scaler": "mixed-precision scaler state",
            },
            (branch,),
        )
        sd = _tensors_of(src, obj[branch], f"'{branch}'")
        for k, v in sd.items():
            name = k[len("module.") :] if k.startswith("module.") else k
            if name.startswith("head."):
                src.skip(f"{branch}.{k}", "DINO projection head")
            elif name.startswith("backbone."):
                src.take(f"{branch}.{k}", name[len("backbone.") :], v)
            else:
                raise src.unexpected(f"{branch}.{k}", "neither backbone. nor head.")
        return
    if "branch" in opts:
        raise HarnessError(
            f"branch={opts['branch']}: {src.path} is a backbone-only state dict (no "
            f"teacher/student entries); leave the option out"
        )
    sd = _tensors_of(src, obj, "the file")
    strip = next(
        (
            p
            for p in ("module.backbone.", "backbone.", "module.")
            if all(
                k.startswith(p) or k.startswith("module.head.") or k.startswith("head.") for k in sd
            )
        ),
        "",
    )
    for k, v in sd.items():
        name = k[len(strip) :] if strip and k.startswith(strip) else k
        name = name[len("module.") :] if name.startswith("module.") else name
        if name.startswith("head."):
            src.skip(k, "DINO projection head")
        else:
            src.take(k, name, v)


def _read_moco_v3(src: _Source, obj, opts: dict) -> None:
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise HarnessError(
            f"{src.path}: no 'state_dict' entry: not a MoCo-v3 checkpoint (its main_moco.py "
            f"saves epoch, arch, state_dict, optimizer, scaler); check --format"
        )
    _top(
        src,
        obj,
        {
            "epoch": "training progress",
            "arch": "architecture name",
            "optimizer": "optimiser state",
            "scaler": "mixed-precision scaler state",
            "best_acc1": "linear-probe accuracy",
        },
        ("state_dict",),
    )
    encoder = opts.get("encoder", "base")
    mine = f"module.{encoder}_encoder."
    other = "module.momentum_encoder." if encoder == "base" else "module.base_encoder."
    sd = _tensors_of(src, obj["state_dict"], "'state_dict'")
    if not any(k.startswith(mine) for k in sd):
        raise HarnessError(
            f"{src.path}: no '{mine}*' keys in state_dict: not a MoCo-v3 pretraining checkpoint "
            f"(a linear-probe checkpoint or another layout?); check --format and encoder="
        )
    for k, v in sd.items():
        if k.startswith(mine):
            name = k[len(mine) :]
            if name.startswith("head."):
                src.skip(f"state_dict.{k}", "MoCo-v3 projector (installed as the ViT head)")
            else:
                src.take(f"state_dict.{k}", name, v)
        elif k.startswith(other):
            src.skip(f"state_dict.{k}", f"the other encoder (encoder={encoder} is imported)")
        elif k.startswith("module.predictor."):
            src.skip(f"state_dict.{k}", "MoCo-v3 predictor")
        else:
            raise src.unexpected(f"state_dict.{k}")
    src.hints["sincos_pos_embed"] = True


def _read_timm(src: _Source, obj, opts: dict) -> None:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        _top(
            src,
            obj,
            {
                "epoch": "training progress",
                "arch": "architecture name",
                "optimizer": "optimiser state",
                "version": "checkpoint version",
                "args": "training arguments",
                "metric": "validation metric",
                "state_dict_ema": "EMA weights (the state_dict is imported)",
                "amp_scaler": "mixed-precision scaler state",
            },
            ("state_dict",),
        )
        _bare(src, obj["state_dict"], "module.")
        src.hints["pos_interp"] = "timm"
        return
    _bare(src, _tensors_of(src, obj, "the file"))
    src.hints["pos_interp"] = "timm"  # timm resamples its table to other sizes itself
    # harness export's record beside the file: the timm arguments, heads among them.
    side = src.path.with_name(src.path.name + ".json")
    try:
        record = json.loads(side.read_text())
        src.hints["heads"] = record["timm_VisionTransformer_kwargs"]["num_heads"]
        src.hints["pos_interp"] = record["harness_model"]["pos_interp"]
    except (OSError, ValueError, KeyError, TypeError):
        pass


def _read_ser(src: _Source, obj, opts: dict) -> None:
    if isinstance(obj, dict) and ("teacher" in obj or "student" in obj):
        branch, other = _branches(src, obj, opts, "SER")
        _top(
            src,
            obj,
            {
                other: f"the {other} network (branch={branch} is imported)",
                "student_head": "projection head",
                "teacher_head": "projection head",
                "projector_equiv": "equivariance projector",
                "optimizer": "optimiser state",
                "scaler": "mixed-precision scaler state",
                "loss_list_inv": "loss history",
                "loss_list_equiv": "loss history",
                "epoch": "training progress",
                "args": "training arguments (equiv_layer, equiv_mode read from them)",
                "dino_loss": "DINO loss state",
                "fp16_scaler": "mixed-precision scaler state",
            },
            (branch,),
        )
        args = obj.get("args")
        for a in ("equiv_layer", "equiv_mode"):
            if getattr(args, a, None) is not None:
                src.hints[a] = getattr(args, a)
        sd, where = obj[branch], f"{branch}."
    else:
        if "branch" in opts:
            raise HarnessError(
                f"branch={opts['branch']}: {src.path} is a bare state dict (no teacher/student "
                f"entries); leave the option out"
            )
        sd, where = _tensors_of(src, obj, "the file"), ""
    for k, v in sd.items():
        name = k[len("module.") :] if k.startswith("module.") else k
        name = name[len("backbone.") :] if name.startswith("backbone.") else name
        if name.startswith("head."):
            src.skip(f"{where}{k}", "projection head")
        else:
            src.take(f"{where}{k}", name, v)


_READERS = {"dino": _read_dino, "moco_v3": _read_moco_v3, "timm": _read_timm, "ser": _read_ser}


def _read_harness(src: _Source, obj, opts: dict) -> BackboneConfig:
    """Another harness run's checkpoint: its evaluated backbone, already in the harness's names."""
    from harness.config import build_method, load_state

    if not isinstance(obj, dict) or any(k not in obj for k in ("step", "model", "config")):
        raise HarnessError(
            f"{src.path}: not a harness checkpoint (it lacks step, model or config); check --format"
        )
    known = {
        "step": "training progress",
        "optimizer": "optimiser state",
        "rng": "random-number state",
        "config": "the run's config (architecture read from it)",
        "imported": "the import record of that run",
        "contents": "what the checkpoint holds",
    }
    _top(src, obj, known, ("model",))
    src.hints["base"] = obj["config"].get("base")
    if obj.get("contents") == "backbone":
        bcfg = BackboneConfig(**obj["config"]["model"])
        for k, v in obj["model"].items():
            src.tensors[k], src.origin[k] = v, f"model.{k}"
        return bcfg
    method = build_method(obj["config"])
    load_state(method, obj["model"], src.path)
    backbone = method.eval_backbone()
    prefix = next(n for n, m in method.named_modules() if m is backbone) + "."
    for k in obj["model"]:
        if k.startswith(prefix):
            src.tensors[k[len(prefix) :]] = obj["model"][k]
            src.origin[k[len(prefix) :]] = f"model.{k}"
        else:
            src.skip(
                f"model.{k}", "heads, target networks and state outside the evaluated backbone"
            )
    return backbone.cfg


# ---- architecture ------------------------------------------------------------------------


def _square(n: int) -> int | None:
    r = math.isqrt(n) if n > 0 else 0
    return r if r > 0 and r * r == n else None


def _need(src: _Source, key: str) -> torch.Tensor:
    if key not in src.tensors:
        raise HarnessError(
            f"{src.path}: backbone key '{key[4:] if key.startswith('vit.') else key}' is missing "
            f"(format {src.fmt}): the file is not a complete ViT backbone of that layout; check "
            f"--format and its options"
        )
    return src.tensors[key]


def _infer(src: _Source, model: dict) -> dict:
    """Width, depth, patch, MLP ratio, image size and [CLS] layout read from the tensors;
    ``model`` (overrides) wins where given."""
    t = src.tensors
    width = int(_need(src, "vit.cls_token").shape[-1])
    proj = _need(src, "vit.patch_embed.proj.weight")
    pe = _need(src, "vit.pos_embed")
    blocks = {int(m.group(1)) for k in t if (m := re.match(r"vit\.blocks\.(\d+)\.", k))}
    if not blocks:
        raise HarnessError(f"{src.path}: no 'blocks.N.*' keys: not a ViT backbone (check --format)")
    fc1 = _need(src, "vit.blocks.0.mlp.fc1.weight")
    arch: dict = {
        "width": width,
        "depth": max(blocks) + 1,
        "patch_size": int(proj.shape[-1]),
        "mlp_ratio": float(fc1.shape[0]) / width,
    }
    n = int(pe.shape[1]) if pe.dim() == 3 else 0
    delayed = src.fmt == "ser" and _square(n) is not None
    if src.fmt == "ser":
        mode = src.hints.get("equiv_mode")
        layer = src.hints.get("equiv_layer")
        if delayed:
            if mode is not None and "erl" not in str(mode):
                raise HarnessError(
                    f"{src.path}: {n} positional entries (no [CLS] slot) but args.equiv_mode="
                    f"{mode!r}: the file contradicts itself; check the checkpoint"
                )
            cls_layer = model.get("cls_layer", layer)
            if cls_layer is None:
                raise HarnessError(
                    f"{src.path}: SER layout ({n} positional entries, no [CLS] slot) and no "
                    f"args.equiv_layer in the file: give the [CLS] layer as model.cls_layer=K"
                )
            if not 0 < int(cls_layer) < arch["depth"]:
                raise HarnessError(
                    f"{src.path}: [CLS] layer {cls_layer} of a {arch['depth']}-block ViT: the "
                    f"public code inserts no [CLS] then; give model.cls_layer=K with 0 < K < depth"
                )
            arch["cls_layer"] = int(cls_layer)
        if any(k.startswith("norm_equiv.") for k in t):
            eq = model.get("equiv_layer", layer if layer is not None else arch.get("cls_layer"))
            if eq is None or int(eq) >= arch["depth"]:
                # equiv_layer == depth: the public code's norm_equiv is the final norm itself.
                for k in [k for k in t if k.startswith("norm_equiv.")]:
                    src.skip(src.origin.pop(k), "alias of the final norm (equiv_layer = depth)")
                    del t[k]
            else:
                arch["equiv_layer"] = int(eq)
    grid = _square(n if delayed else n - 1)
    if "img_size" not in model:
        if grid is None:
            raise HarnessError(
                f"{src.path}: pos_embed has {n} entries, not {'' if delayed else '1 + '}a square "
                f"grid: give the training image size as model.img_size=PIXELS"
            )
        arch["img_size"] = grid * arch["patch_size"]
    if "heads" not in model:
        if src.hints.get("heads"):
            arch["heads"] = int(src.hints["heads"])
        elif src.fmt == "moco_v3":
            arch["heads"] = 12  # MoCo-v3's vit_small/vit_base/vit_conv_* all use 12
        elif width % 64 == 0:
            arch["heads"] = width // 64  # timm's and DINO's ViT-Ti/S/B/L: head width 64
        else:
            raise HarnessError(
                f"{src.path}: width {width} is not a multiple of 64, so the number of attention "
                f"heads cannot be assumed: give it as model.heads=N"
            )
    for hint in ("sincos_pos_embed", "pos_interp"):
        if hint in src.hints:
            arch[hint] = src.hints[hint]
    out = {**arch, **model}
    if out["width"] % out["heads"]:
        raise HarnessError(
            f"model.heads={out['heads']} does not divide width {out['width']}: give the heads "
            f"the checkpoint was trained with"
        )
    return out


def _typed_field(arg: str, field: str, value):
    """``value`` as BackboneConfig's ``field`` takes it (int, float, bool, str; None for the
    optional layers), or a one-line error."""
    default = getattr(BackboneConfig(), field)
    want = int if default is None else type(default)
    if value is None and default is None:
        return None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    raise HarnessError(f"{arg}: expected {want.__name__}, got {value!r}")


def parse_options(fmt: str, options) -> tuple[dict, dict]:
    """``key=value`` arguments: ``model.FIELD`` overrides and the format's own options."""
    import yaml

    model, opts = {}, {}
    for arg in options:
        key, eq, raw = str(arg).partition("=")
        key = key.strip()
        if not eq or not key:
            raise HarnessError(f"cannot read '{arg}': write KEY=VALUE (e.g. model.heads=12)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise HarnessError(f"{arg}: cannot parse '{raw}'") from None
        if key.startswith("model."):
            field = key[len("model.") :]
            if field not in _MODEL_FIELDS:
                raise HarnessError(
                    f"unknown setting '{key}': the model keys are "
                    f"{', '.join('model.' + f for f in _MODEL_FIELDS)}"
                )
            model[field] = _typed_field(arg, field, value)
        elif key == "published":
            opts[key] = str(value)
        elif key in OPTIONS[fmt]:
            if value not in OPTIONS[fmt][key]:
                raise HarnessError(
                    f"{arg}: {key} is one of {', '.join(OPTIONS[fmt][key])} for format {fmt}"
                )
            opts[key] = value
        else:
            allowed = [f"{k}=" for k in OPTIONS[fmt]] + ["published=", "model.KEY="]
            raise HarnessError(
                f"unknown option '{key}' for format {fmt}: it takes {', '.join(allowed)}"
            )
    return model, opts


def read_source(path, fmt: str, options=()) -> tuple[BackboneConfig, dict, _Source]:
    """The architecture and backbone state dict of the checkpoint at ``path`` in layout
    ``fmt``, checked key by key against the harness Backbone; and the source's record."""
    path = Path(path)
    if fmt not in FORMATS:
        raise HarnessError(f"unknown format '{fmt}': choose one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise HarnessError(f"{path} does not exist or is not a file: give the checkpoint's path")
    model, opts = parse_options(fmt, options)
    src = _Source(path, fmt)
    obj = _load(path)
    if fmt == "harness":
        bcfg = _read_harness(src, obj, opts)
        if model:
            bcfg = BackboneConfig(**{**asdict(bcfg), **model})
    else:
        _READERS[fmt](src, obj, opts)
        arch = _infer(src, model)
        bcfg = BackboneConfig(**{**asdict(BackboneConfig()), "drop_path": 0.0, **arch})
    return bcfg, _check(src, bcfg), src


def _name(src: _Source, key: str) -> str:
    return src.origin.get(key, key[4:] if key.startswith("vit.") else key)


def _check(src: _Source, bcfg: BackboneConfig) -> dict:
    """The backbone state dict, every key present, none extra, every shape right."""
    try:
        expected = Backbone(bcfg).state_dict()
    except (AssertionError, ValueError, RuntimeError) as e:
        raise HarnessError(f"{src.path}: architecture {bcfg} cannot be built: {e}") from None
    missing = [k for k in expected if k not in src.tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise HarnessError(
            f"{src.path}: backbone key '{_name(src, missing[0])}' is missing{more} (format "
            f"{src.fmt}, {arch_text(bcfg)}): the file is incomplete or of another layout; check "
            f"--format and model.KEY= overrides"
        )
    extra = [k for k in src.tensors if k not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise HarnessError(
            f"{src.path}: unexpected key '{_name(src, extra[0])}'{more}: not part of a "
            f"{arch_text(bcfg)} backbone nor a head or training-state entry of format {src.fmt}; "
            f"check --format and model.KEY= overrides"
        )
    for k, v in expected.items():
        if tuple(src.tensors[k].shape) != tuple(v.shape):
            raise HarnessError(
                f"{src.path}: key '{_name(src, k)}' has shape {tuple(src.tensors[k].shape)}, "
                f"the backbone ({arch_text(bcfg)}) expects {tuple(v.shape)}: the file is not of one "
                f"architecture, or give it as model.KEY= overrides"
            )
    return {
        k: src.tensors[k].detach().to(v.dtype).clone().contiguous() for k, v in expected.items()
    }


def arch_text(b: BackboneConfig) -> str:
    cls = "standard [CLS]" if b.cls_layer is None else f"[CLS] after block {b.cls_layer}"
    return (
        f"width {b.width}, depth {b.depth}, {b.heads} heads, patch {b.patch_size}, "
        f"{b.img_size} px, {cls}"
    )


def load_backbone(path, fmt: str, options=()) -> Backbone:
    """The checkpoint's backbone, built and loaded (eval mode), without writing anything."""
    bcfg, state, _ = read_source(path, fmt, options)
    backbone = Backbone(bcfg)
    backbone.load_state_dict(state)
    return backbone.eval()


def detect_format(path) -> str:
    """The format of a checkpoint file from its layout (for ``NAME=import:PATH`` rows)."""
    obj = _load(Path(path))
    if isinstance(obj, dict):
        if all(k in obj for k in ("step", "model", "config")):
            return "harness"
        sd = obj.get("state_dict")
        if isinstance(sd, dict) and any(str(k).startswith("module.base_encoder.") for k in sd):
            return "moco_v3"
        branch = obj.get("teacher", obj.get("student"))
        if isinstance(branch, dict):
            named = [str(k) for k in branch]
            if any(k.startswith(("backbone.", "module.backbone.")) for k in named):
                return "dino"
            return "ser"
        if isinstance(sd, dict) or "pos_embed" in obj:
            return "timm"
    raise HarnessError(
        f"cannot tell the layout of {path}: import it with harness import NAME PATH --format F "
        f"({', '.join(FORMATS)}) and name the row NAME"
    )
