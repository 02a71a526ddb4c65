"""From a resolved config to objects: the Method it describes, and a finished run's trained
Method read back from its checkpoint (what every evaluation starts from)."""

from __future__ import annotations

from pathlib import Path

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


def read_checkpoint(path: Path, cfg: dict | None = None, device="cpu") -> dict:
    """A checkpoint, checked before use: readable, with what training writes, and (given the
    run's ``cfg``) of that run: the same run id, so the same method, recipe and architecture.
    A HarnessError in one line otherwise; the file is left as it is."""
    from harness.config.resolve import run_id

    path = Path(path)
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated, not a checkpoint, unpicklable
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
    own = run_dir / "config.yaml"
    cfg = None
    if own.exists():
        import yaml

        cfg = yaml.safe_load(own.read_text())
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
