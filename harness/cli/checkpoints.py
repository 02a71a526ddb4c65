"""``harness import`` and ``export``: checkpoints in from elsewhere, backbones out to timm."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cli.args import DEFAULT_RESULTS, takes_overrides

IMPORT_EPILOG = (
    "KEY=VALUE: model.heads=12-style architecture the tensors cannot tell; "
    "branch=teacher|student (dino, ser); encoder=base|momentum (moco_v3); published=KEY "
    "(a checkpoint of tables/reference/published.csv, else matched by file name)"
)


def cmd_import(a) -> int:
    from harness.checkpoints.exchange import import_checkpoint

    run_dir, written = import_checkpoint(
        a.name, a.path, a.format, a.overrides, a.results, a.preset, a.method
    )
    if written:
        info = json.loads((run_dir / "pretrain.json").read_text())
        print(
            f"{run_dir}: {info['architecture']}; {info['loaded']} backbone tensors loaded, "
            f"{info['skipped']} entries skipped (listed in import.json)"
        )
    else:
        print(f"{run_dir}: already imported from this file (sha256 unchanged); nothing to do")
    return 0


def cmd_export(a) -> int:
    from harness.checkpoints.exchange import export_timm, resolve_run

    run_dir = resolve_run(a.run, a.results)
    out = Path(a.out) if a.out else Path(a.results) / "exports" / f"{run_dir.name}-timm.pth"
    path, kwargs = export_timm(run_dir, out)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    also = path.with_suffix(".safetensors")
    if also != path:
        print(also)
    print(f"{path}\n  load with timm.models.vision_transformer.VisionTransformer({args})")
    return 0


def add(sub) -> None:
    from harness.checkpoints.layouts import FORMATS

    r = sub.add_parser(
        "import",
        help="turn a checkpoint trained elsewhere (DINO, MoCo-v3, timm, SER, harness) into a "
        "run every evaluation and table reads",
    )
    r.add_argument("name", help="the run's name: RESULTS/runs/NAME, and the table row's name")
    r.add_argument(
        "path",
        help="the checkpoint file, read with torch.load(weights_only=True) (or .safetensors): "
        "tensors, plain data, numpy arrays, argparse.Namespace and torch.nn layers only; a "
        "file holding anything else is refused, as unpickling it could run code",
    )
    r.add_argument("--format", required=True, choices=FORMATS)
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--preset", default="paper", help="the preset of the stored config")
    r.add_argument("--method", help="base method whose recipes the run takes (default: by format)")
    # KEY=VALUE here are the import's options, not config overrides.
    takes_overrides(r, cmd_import, IMPORT_EPILOG)

    r = sub.add_parser(
        "export",
        help="write a run's evaluated backbone as a timm state dict (.pth and .safetensors); "
        "its checkpoint.pt is read with weights_only=True",
    )
    r.add_argument("run", help="a run directory, or a run id under RESULTS/runs")
    r.add_argument("--format", required=True, choices=["timm"])
    r.add_argument(
        "--out",
        help="output file (default: RESULTS/exports/RUN-timm.pth), the .safetensors beside it; "
        "FILE.safetensors: that file only",
    )
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.set_defaults(fn=cmd_export)
