"""What every checkpoint format shares: the record of a read (``Source``), the
``CheckpointFormat`` base class with its typed options, and the small readers the layouts
have in common (top-level entries, bare timm-named state dicts, teacher/student branches)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.model.backbone import BackboneConfig

# What ``model.KEY=value`` may set: any BackboneConfig field (heads, cls_layer, img_size, …).
MODEL_FIELDS = tuple(f.name for f in fields(BackboneConfig))


@dataclass(frozen=True)
class Option:
    """A format's own ``key=value`` option: its default and the values it may take."""

    name: str
    default: str
    choices: tuple[str, ...]


class Source:
    """What a reader found: backbone tensors under the harness Backbone's names, where each
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


class CheckpointFormat:
    """One key layout: how to recognise it, its options, how to read it, and the base method
    whose evaluation recipes its numbers are compared under."""

    name: str = ""
    base_method: str | None = None
    options: tuple[Option, ...] = ()
    # The number of attention heads of its ViTs when the file does not say (None: width / 64).
    default_heads: int | None = None

    def detect(self, obj) -> int:
        """How surely ``obj`` (a loaded file) is of this layout: 0 not at all; the highest
        score among the formats wins."""
        return 0

    def read(self, src: Source, obj, opts: dict) -> BackboneConfig | None:
        """Fill ``src`` from ``obj``; a format that knows the whole architecture returns it."""
        raise NotImplementedError

    def layout(self, src: Source, model: dict, arch: dict, n: int) -> bool:
        """Format-specific architecture read into ``arch`` from ``n`` positional entries;
        True when they hold no [CLS] slot."""
        return False

    def option(self, opts: dict, key: str) -> str:
        """The value of option ``key``: given, else its default."""
        return opts.get(key, next(o.default for o in self.options if o.name == key))

    def takes(self) -> str:
        return ", ".join([f"{o.name}=" for o in self.options] + ["published=", "model.KEY="])

    def parse_options(self, options) -> tuple[dict, dict]:
        """``key=value`` arguments (parsed as every override is): the ``model.FIELD`` overrides
        and the format's own options given, typed and checked."""
        from harness.config import apply_overrides

        args = [str(a) for a in options]
        mine = {o.name: o for o in self.options}
        given = [a.partition("=")[0].strip(" ") for a in args]
        for arg, key in zip(args, given):
            own = "=" in arg and key and not key.startswith("model.") and key != "published"
            if own and key not in mine:
                raise HarnessError(
                    f"unknown option '{key}' for format {self.name}: it takes {self.takes()}"
                )
        defaults = {
            "model": asdict(BackboneConfig()),
            "published": None,
            **{o.name: o.default for o in self.options},
        }
        got = apply_overrides(defaults, args, f"format {self.name} takes {self.takes()}")
        model, opts = {}, {}
        for arg, key in zip(args, given):
            if key.startswith("model."):
                field = key[len("model.") :]
                model[field] = _optional_layer(arg, field, got["model"][field])
            elif key == "published":
                opts[key] = str(got[key])
            else:
                if got[key] not in mine[key].choices:
                    raise HarnessError(
                        f"{arg}: {key} is one of {', '.join(mine[key].choices)} for format "
                        f"{self.name}"
                    )
                opts[key] = got[key]
        return model, opts


def _optional_layer(arg: str, field: str, value):
    """The BackboneConfig fields that are None by default take an int (or null) when set."""
    if getattr(BackboneConfig(), field) is not None or value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise HarnessError(f"{arg}: expected int, got {value!r}")


def top(src: Source, obj, known: dict[str, str], inner: tuple[str, ...]) -> None:
    """Skip the known top-level entries of a training checkpoint; any other is an error."""
    for k in obj:
        if k in inner:
            continue
        if k not in known:
            raise src.unexpected(str(k), "top-level entry")
        src.skip(str(k), known[k])


def tensors_of(src: Source, obj, what: str) -> dict:
    if not isinstance(obj, dict) or not obj:
        raise HarnessError(f"{src.path}: {what} is not a state dict (check --format {src.fmt})")
    return obj


def bare(src: Source, sd: dict, prefix: str = "") -> None:
    """A timm-named backbone state dict: ``head.*`` skipped, everything else taken."""
    for k, v in sd.items():
        name = k[len(prefix) :] if prefix and k.startswith(prefix) else k
        if name.startswith("head.") or name.startswith("head_"):
            src.skip(k, "classification/projection head (evaluations probe the backbone)")
        else:
            src.take(k, name, v)


def has_branches(obj) -> bool:
    return isinstance(obj, dict) and ("teacher" in obj or "student" in obj)


def branch_keys(obj) -> list[str] | None:
    """The keys of a teacher/student checkpoint's first branch, or None if it has none."""
    if not isinstance(obj, dict):
        return None
    branch = obj.get("teacher", obj.get("student"))
    return [str(k) for k in branch] if isinstance(branch, dict) else None


def read_branch(src: Source, obj: dict, opts: dict, kind: str, known: dict[str, str]) -> str:
    """Skip the other branch and the ``known`` entries of a teacher/student checkpoint
    (DINO's, SER's); the branch imported."""
    branch = opts.get("branch", "teacher")
    if not isinstance(obj.get(branch), dict):
        raise HarnessError(f"{src.path}: no '{branch}' state dict in this {kind} checkpoint")
    other = "student" if branch == "teacher" else "teacher"
    top(src, obj, {other: f"the {other} network (branch={branch} is imported)", **known}, (branch,))
    return branch


def no_branch(src: Source, opts: dict, what: str) -> None:
    if "branch" in opts:
        raise HarnessError(
            f"branch={opts['branch']}: {src.path} is a {what} (no teacher/student entries); "
            f"leave the option out"
        )


def strip(name: str, *prefixes: str) -> str:
    """``name`` without each of ``prefixes`` in turn, where it starts with it."""
    for p in prefixes:
        name = name[len(p) :] if name.startswith(p) else name
    return name
