"""Checkpoints trained elsewhere, in and out: ``harness import`` and ``harness export``.

``import_checkpoint`` turns a published or foreign checkpoint into a run directory that every
evaluation, table and report reads like one the harness trained (``results/runs/<NAME>``):

- ``config.yaml``: the matching base method's resolved config, its ``model`` section the
  architecture read from the tensors (plus ``model.KEY=value`` overrides), and an
  ``imported`` section (name, format, source, sha256, options, base method, published key);
- ``checkpoint.pt``: the backbone's weights only (``contents: backbone``); heads are not used
  by evaluations, so ``harness.config.load_trained`` builds a bare backbone for it and still
  compares its full key set;
- ``pretrain.json``: the pretraining job marked done, so tables plan only evaluations;
- ``import.json``: every key of the file, loaded (as which backbone key) or skipped (why).

The files are read-only. Every key of the source is either loaded or deliberately skipped
(heads, optimiser state, the other branch); a missing, unexpected or mis-shaped backbone key
stops the import with one line naming it: never a silent partial load.

The key layouts of the formats are read in ``harness.checkpoints.layouts``.

``export_timm`` writes a run's evaluated backbone as a timm ``VisionTransformer`` state dict,
as ``.pth`` and ``.safetensors``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from safetensors.torch import save as safetensors_save

from harness.checkpoints.formats import get as get_format
from harness.checkpoints.layouts import arch_text, detect_format, parse_options, read_source
from harness.errors import HarnessError
from harness.io import _atomic, save_torch, shareable, write_json, write_text

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
PUBLISHED_CSV = "published.csv"


# ---- reading the source ------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- published numbers -------------------------------------------------------------------


def published_reference() -> list[dict]:
    """Rows of ``tables/reference/published.csv``: the published numbers of released
    checkpoints (checkpoint, files, format, dataset, metric, value, source)."""
    from tables import REFERENCE_DIR

    with open(REFERENCE_DIR / PUBLISHED_CSV, newline="") as f:
        return [dict(r, value=float(r["value"])) for r in csv.DictReader(f)]


def published_key(path: Path, fmt: str, given: str | None) -> str | None:
    """Which published checkpoint the file is: ``published=KEY``, else its file name."""
    rows = published_reference()
    keys = sorted({r["checkpoint"] for r in rows})
    if given is not None:
        if given in ("", "none", "None"):
            return None
        if given not in keys:
            raise HarnessError(
                f"published={given}: not in tables/reference/{PUBLISHED_CSV}; one of "
                f"{', '.join(keys)} (or published=none)"
            )
        return given
    for r in rows:
        if fmt == r["format"] and Path(path).name in r["files"].split("|"):
            return r["checkpoint"]
    return None


def published_cells(name: str, key: str | None) -> list[tuple[str, str, str, float]]:
    """(row, dataset, metric, value) of the published numbers of checkpoint ``key``."""
    if not key:
        return []
    return [
        (name, r["dataset"], r["metric"], r["value"])
        for r in published_reference()
        if r["checkpoint"] == key
    ]


# ---- the run directory -------------------------------------------------------------------


def imported_config(results_dir, name: str) -> dict | None:
    """The stored config of the imported run ``name`` under ``results_dir``, or None."""
    if not _NAME.fullmatch(str(name)):
        return None
    path = Path(results_dir) / "runs" / name / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    cfg = yaml.safe_load(path.read_text())
    return cfg if isinstance(cfg, dict) and isinstance(cfg.get("imported"), dict) else None


@dataclass(frozen=True)
class ImportRow:
    """A table row ``NAME=import:PATH``: the checkpoint at ``path`` evaluated as run ``name``."""

    name: str
    path: Path


def parse_row(row: str) -> ImportRow | None:
    """The import a table row asks for (``NAME=import:PATH``), or None for a name (a method, or
    a run ``harness import`` wrote). Reads the text only."""
    name, eq, spec = row.partition("=")
    if not eq:
        return None
    if not spec.startswith("import:") or not spec[len("import:") :].strip():
        raise HarnessError(
            f"row '{row}': write NAME=import:PATH (a checkpoint to import as row NAME), or a "
            f"method name"
        )
    return ImportRow(name.strip(), Path(spec[len("import:") :].strip()).expanduser())


def is_imported(row: ImportRow, results_dir) -> bool:
    """Whether ``row``'s file is what its run under ``results_dir`` was imported from."""
    stored = imported_config(results_dir, row.name)
    return (
        stored is not None
        and row.path.is_file()
        and stored["imported"]["sha256"] == sha256(row.path)
    )


def import_row(row: ImportRow, results_dir) -> None:
    """Import ``row``'s checkpoint as ``harness import NAME PATH`` with its format detected."""
    import_checkpoint(row.name, row.path, detect_format(row.path), (), results_dir)


def job_config(stored: dict, preset: str, seed: int = 0, overrides=()) -> dict:
    """The config an evaluation of imported run ``stored`` reads at ``preset``: the preset's
    data and evaluation recipes (with ``overrides``), the checkpoint's architecture, evaluated
    at the preset's image size."""
    from harness import config as C

    imp = stored["imported"]
    cfg = C.resolve(imp["base"], preset, seed, overrides=overrides)
    cfg["method"] = imp["name"]
    cfg["addons"] = []
    cfg["model"] = {**stored["model"], "img_size": cfg["model"]["img_size"]}
    cfg["imported"] = dict(imp)
    return cfg


def _check_name(name: str) -> None:
    from harness.config.presets import PRESETS
    from methods.registry import parse

    if not _NAME.fullmatch(name):
        raise HarnessError(
            f"run name '{name}': use letters, digits, '_', '.', '-', starting with a letter "
            f"(e.g. dino_official)"
        )
    # A trained run's folder is named <method>-<preset>-<12 hex of its config>: an import
    # under such a name would be taken for (or take the place of) that run.
    presets = "|".join(re.escape(p) for p in PRESETS)
    if re.fullmatch(rf".+-(?:{presets})-[0-9a-f]{{12}}", name):
        raise HarnessError(
            f"run name '{name}' has the form of a trained run's id (METHOD-PRESET-HASH), so "
            f"commands of its results folder could take one for the other: pick another, e.g. "
            f"{name.split('-')[0]}_official"
        )
    try:
        parse(name)
    except HarnessError:
        return
    raise HarnessError(
        f"run name '{name}' is a method name, so table rows could not tell them apart: pick "
        f"another, e.g. {name}_official"
    )


def import_checkpoint(
    name: str,
    path,
    fmt: str,
    options=(),
    results_dir="results",
    preset: str = "paper",
    method: str | None = None,
) -> tuple[Path, bool]:
    """Make ``results_dir/runs/<name>`` from the checkpoint at ``path``. Returns the run
    directory and whether it was written (False: the same import was already there)."""
    from harness import config as C
    from methods.registry import parse

    _check_name(name)
    path = Path(path).resolve()
    if not path.is_file():
        raise HarnessError(f"{path} does not exist or is not a file: give the checkpoint's path")
    run_dir = Path(results_dir).resolve() / "runs" / name
    options = [str(o) for o in options]
    parse_options(fmt, options)  # a bad format or option fails before anything is read
    digest = sha256(path)
    if run_dir.exists():
        stored = imported_config(results_dir, name)
        if stored is None:
            raise HarnessError(
                f"{run_dir} exists and is not an import (a run trained there, or another "
                f"folder): pick another name for this checkpoint"
            )
        imp = stored["imported"]
        if (imp["sha256"], imp["format"], imp["options"]) == (digest, fmt, options):
            return run_dir, False
        raise HarnessError(
            f"{name} is already the import of {imp['source']} ({imp['format']}, sha256 "
            f"{imp['sha256'][:12]}…, options {imp['options']}): pick another name, or delete "
            f"{run_dir} to import this file under it"
        )
    bcfg, state, src = read_source(path, fmt, options)
    _, opts = parse_options(fmt, options)
    base = method or src.hints.get("base") or get_format(fmt).base_method or "moco_v3"
    base_cls, addons = parse(base)
    if addons:
        raise HarnessError(
            f"--method {base}: give a base method (its evaluation recipes are used); the "
            f"architecture comes from the checkpoint"
        )
    cfg = C.resolve(base_cls.name, preset)
    cfg["method"] = name
    cfg["addons"] = []
    cfg["model"] = asdict(bcfg)
    cfg["imported"] = {
        "name": name,
        "format": fmt,
        "source": str(path),
        "sha256": digest,
        "options": options,
        "base": base_cls.name,
        "published": published_key(path, fmt, opts.get("published")),
    }
    record = {
        "run_id": name,
        "method": name,
        "preset": preset,
        "imported": cfg["imported"],
        "architecture": arch_text(bcfg),
        "loaded": len(state),
        "skipped": len(src.skipped),
        "finished": True,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    keys = {
        "loaded": {src.origin.get(k, k): k for k in state},
        "skipped": dict(sorted(src.skipped.items())),
    }
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{name}.import-"))
    try:
        ck = {"step": 0, "model": state, "config": cfg, "contents": "backbone"}
        ck["imported"] = cfg["imported"]
        save_torch(tmp / "checkpoint.pt", ck)
        write_text(tmp / "config.yaml", C.to_yaml(cfg))
        write_json(tmp / "import.json", keys)
        write_json(tmp / "pretrain.json", record)
        for f in tmp.iterdir():
            os.chmod(f, f.stat().st_mode & ~0o222)
        shareable(tmp, directory=True)
        os.rename(tmp, run_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if run_dir.exists():  # another process imported under this name meanwhile
            return import_checkpoint(name, path, fmt, options, results_dir, preset, method)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir, True


# ---- export ------------------------------------------------------------------------------


def resolve_run(run: str, results_dir) -> Path:
    """A run given as a directory or as a run id under ``results_dir/runs``."""
    p = Path(run)
    for cand in (p, Path(results_dir) / "runs" / run):
        if (cand / "checkpoint.pt").is_file():
            return cand
    raise HarnessError(
        f"no run '{run}': give a run directory with a checkpoint.pt, or a run id under "
        f"{Path(results_dir) / 'runs'} (harness status lists them)"
    )


def export_timm(run_dir, out) -> tuple[Path, dict]:
    """Write the run's evaluated backbone as a timm ``VisionTransformer`` state dict at
    ``out`` (and ``out.json``: the timm arguments that build it). Returns (path, arguments)."""
    from harness.config import load_trained

    run_dir = Path(run_dir)
    backbone = load_trained(run_dir).eval_backbone()
    b = backbone.cfg
    if b.cls_layer is not None:
        raise HarnessError(
            f"{run_dir}: its ViT inserts [CLS] after block {b.cls_layer} (SER layout), which "
            f"timm's VisionTransformer cannot express: evaluate it in the harness "
            f"(harness run TABLE --methods ...) instead"
        )
    state = {
        k[len("vit.") :]: v.detach().cpu().clone()
        for k, v in backbone.state_dict().items()
        if k.startswith("vit.")
    }
    kwargs = {
        "img_size": b.img_size,
        "patch_size": b.patch_size,
        "embed_dim": b.width,
        "depth": b.depth,
        "num_heads": b.heads,
        "mlp_ratio": b.mlp_ratio,
        "qkv_bias": True,
        "num_classes": 0,
    }
    out = Path(out)
    record = {
        "timm_VisionTransformer_kwargs": kwargs,
        "harness_model": asdict(b),
        "run": str(run_dir),
    }
    # safetensors beside the .pth: a format that holds tensors only, so reading it runs no code
    # whatever its origin (timm's load_checkpoint and harness import read either).
    exchange = out if out.suffix == ".safetensors" else out.with_suffix(".safetensors")
    for f in dict.fromkeys((out, exchange)):
        if f.suffix == ".safetensors":
            _atomic(f, lambda fh: fh.write(safetensors_save(state, metadata={"format": "pt"})))
        else:
            save_torch(f, state)
        write_json(f.with_name(f.name + ".json"), record)
    return out, kwargs
