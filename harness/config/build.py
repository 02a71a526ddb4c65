"""From a resolved config to objects: the Method it describes, and a finished run's trained
Method read back from its checkpoint (what every evaluation starts from)."""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.model.backbone import BackboneConfig
from methods.registry import parse


def build_method(cfg: dict):
    """The Method of a resolved config (add-ons instantiated with their resolved options,
    head widths at the paper's × the preset's ``heads.width_factor``)."""
    base_cls, _ = parse(cfg["method"])
    from methods.registry import ADDONS

    addons = [ADDONS[a["name"]](cfg["base"], **a["options"]) for a in cfg["addons"]]
    bcfg = BackboneConfig(**cfg["model"])
    for a in addons:
        bcfg = a.configure_backbone(bcfg)
    width_factor = cfg.get("heads", {}).get("width_factor", 1.0)
    return base_cls(bcfg, cfg["recipe"], addons, width_factor)


_LAYERS = ("Linear", "Sequential", "GELU", "ReLU", "BatchNorm1d", "LayerNorm", "Identity")


def _numpy_globals() -> list:
    """numpy's array and scalar reconstructors (under the module names numpy 1 and 2 pickle
    them with): they rebuild an array or a scalar from its dtype and bytes, nothing else."""
    core = getattr(np, "_core", None) or np.core
    out = [np.ndarray, np.dtype]
    # Each dtype pickles with its class, set up in a BUILD step: the numeric ones only.
    out += sorted({type(np.dtype(c)) for c in "?bhilqBHILQefdFD"}, key=str)
    for fn in (core.multiarray._reconstruct, core.multiarray.scalar):
        out += [(fn, f"{mod}.multiarray.{fn.__name__}") for mod in ("numpy.core", "numpy._core")]
    return out


# What a file may hold besides tensors and plain data (dicts, lists, numbers, strings), by
# whom it was written. A harness checkpoint: numpy arrays (the numpy RNG state). A published
# training checkpoint besides: its ``argparse.Namespace`` of arguments (DINO's, SER's), numpy
# loss lists, and heads saved as modules of torch's own layers (SER's).
CHECKPOINT_GLOBALS = tuple(_numpy_globals())
PUBLISHED_GLOBALS = (
    *CHECKPOINT_GLOBALS,
    argparse.Namespace,
    *(getattr(torch.nn, n) for n in _LAYERS),
)
_REFUSED = re.compile(
    r"Unsupported global: GLOBAL (\S+)|Can only build .* but got <class '([^']+)'>"
)


class UnsafeFile(HarnessError):
    """A file that would need a global outside the allowed ones to be unpickled."""


def safe_load(path: Path, device="cpu", published: bool = False):
    """``torch.load`` with ``weights_only=True``, allowing only ``CHECKPOINT_GLOBALS`` (or
    ``PUBLISHED_GLOBALS``) besides tensors and plain data: a file holding anything else (a
    function to call, a class to construct) is refused in one line naming what it holds
    (``UnsafeFile``), without running any of it. Other failures (cut short, not a torch file)
    propagate for the caller to word."""
    allowed = PUBLISHED_GLOBALS if published else CHECKPOINT_GLOBALS
    extra = ", argparse.Namespace, torch.nn layers" if published else ""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        m = _REFUSED.search(str(e))
        if m is None:
            raise
        held = m.group(1) or m.group(2)
        raise UnsafeFile(
            f"{path} holds {held}, which unpickling would call: refused, as loading it could "
            f"run code (only tensors, plain data, numpy arrays{extra} are read); get a file of "
            f"plain tensors (a state dict) from a source you trust"
        ) from None


def read_checkpoint(path: Path, cfg: dict | None = None, device="cpu") -> dict:
    """A checkpoint, checked before use: readable, with what training writes, and (given the
    run's ``cfg``) of that run: the same run id, so the same method, recipe and architecture.
    A HarnessError in one line otherwise; the file is left as it is."""
    from harness.config.resolve import run_id

    path = Path(path)
    try:
        ck = safe_load(path, device)
    except UnsafeFile:
        raise
    except Exception as e:  # truncated, not a checkpoint
        raise HarnessError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:120]}): it was "
            f"cut short or is not a harness checkpoint; move it aside to train the run again"
        ) from None
    missing = [k for k in ("step", "model", "config") if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise HarnessError(
            f"checkpoint {path} lacks {', '.join(missing)}: it was not written by harness "
            f"training (import published weights with their own command); move it aside"
        )
    if cfg is not None and run_id(ck["config"]) != run_id(cfg):
        raise HarnessError(
            f"checkpoint {path} belongs to run {run_id(ck['config'])} "
            f"({ck['config'].get('method')}), not to {run_id(cfg)}: move it back to that run's "
            f"folder or delete it"
        )
    return ck


def load_state(module, state: dict, path: Path) -> None:
    """``load_state_dict`` with the key sets compared first, the mismatch in one line."""
    own, theirs = set(module.state_dict()), set(state)
    if own != theirs:
        lack, extra = sorted(own - theirs), sorted(theirs - own)
        raise HarnessError(
            f"checkpoint {path} does not fit this method: {len(lack)} key(s) missing "
            f"(e.g. {lack[:1]}), {len(extra)} unexpected (e.g. {extra[:1]}); move it aside"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as e:  # same keys, other shapes
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)[:160]
        raise HarnessError(f"checkpoint {path} does not fit this method: {first}") from None


def load_trained(run_dir: Path, device="cpu"):
    """The trained Method of a finished run (for evaluations): the checkpoint must be the run
    folder's own (its config.yaml's run), never another run's copied in."""
    run_dir = Path(run_dir)
    from harness.config.resolve import read_stored_config

    own = run_dir / "config.yaml"
    cfg, why = read_stored_config(own)
    if why:
        raise HarnessError(
            f"{own} is not a config (not a YAML mapping): `harness run` sets the run "
            "folder aside and trains it again"
        )
    path = run_dir / "checkpoint.pt"
    ck = read_checkpoint(path, cfg, device)
    if ck.get("contents") == "backbone":
        return _imported(ck, path)
    method = build_method(ck["config"])
    load_state(method, ck["model"], path)
    return method.eval()


class Imported(torch.nn.Module):
    """An imported run (``harness import``): the published backbone alone. Evaluations probe
    only ``eval_backbone()``; the heads it was trained with are not part of the import."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def eval_backbone(self):
        return self.backbone


def _imported(ck: dict, path: Path) -> Imported:
    """The backbone of an imported run's checkpoint, every key of it checked (load_state)."""
    from harness.model.backbone import Backbone

    if not isinstance(ck["config"].get("imported"), dict):
        raise HarnessError(
            f"checkpoint {path} holds a backbone only but its config is not an import: it was "
            f"not written by harness import; move it aside"
        )
    backbone = Backbone(BackboneConfig(**ck["config"]["model"]))
    load_state(backbone, ck["model"], path)
    return Imported(backbone).eval()
