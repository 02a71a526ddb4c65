"""Table 2's six methods at the paper's shapes (ViT-S/16, 224 px) on ImageNet-like JPEGs.

Everything the paper preset runs except the scale: one CLI process plans and runs the six
pretrainings on the `imagenet_jpeg` fixture (real wnid folders, photo-sized JPEGs decoded by
loader workers) for 2 steps of batch 8, then the linear probe's features are extracted from each
checkpoint. One process for all six, as a user's `harness run table2 --cluster debug` is: the
interpreter, torch and the fixture's readers start once.
SER runs at r = 0.25 so that round(0.25 · 8) = 2 images enter its equivariance loss.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from harness.data import fixtures as fx

BATCH, STEPS, WORKERS = 8, 2, 2
CFG = fx.Config()  # what the `imagenet_jpeg` fixture of tests/conftest.py is written with
METHODS = [m for base in ("moco_v3", "dino", "barlow_twins") for m in (base, f"{base}+ser@r0.25")]


def paper_run_command(methods: str, data_root, results) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "table2",
        "--preset",
        "paper",
        "--cluster",
        "debug",
        "--only",
        "pretrain",
        "--methods",
        methods,
        "--data-root",
        str(data_root),
        "--results",
        str(results),
        f"train.batch_size={BATCH}",
        f"train.max_steps={STEPS}",
        f"runtime.num_workers={WORKERS}",
        "runtime.quiet=true",
    ]
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cmd.append("runtime.threads=1")  # two workers, two cores: one thread each
    return cmd


@pytest.mark.slow
def test_pretrain_and_features_at_paper_shapes(imagenet_jpeg, tmp_path):
    results = tmp_path / "results"
    p = subprocess.run(
        paper_run_command(",".join(METHODS), imagenet_jpeg, results),
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["submitted"] == len(METHODS) and summary["failed"] == 0, p.stdout

    runs = {}
    for run_dir in (results / "runs").iterdir():
        runs[yaml.safe_load((run_dir / "config.yaml").read_text())["method"]] = run_dir
    assert sorted(runs) == sorted(METHODS)
    for method in METHODS:
        check_run(method, runs[method], imagenet_jpeg)
        # A checkpoint at these shapes is 0.6 GB (MoCo-v3, DINO) to 1.9 GB (Barlow Twins'
        # 8192-wide projector and its optimiser state); pytest keeps tmp_path, not these.
        (runs[method] / "checkpoint.pt").unlink()


def check_run(method: str, run_dir, data_root) -> None:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["method"] == method and cfg["preset"] == "paper"
    assert {k: cfg["model"][k] for k in ("img_size", "patch_size", "width", "depth", "heads")} == {
        "img_size": 224,
        "patch_size": 16,
        "width": 384,
        "depth": 12,
        "heads": 6,
    }
    assert cfg["train"]["batch_size"] == BATCH and cfg["runtime"]["num_workers"] == WORKERS

    done = json.loads((run_dir / "pretrain.json").read_text())
    assert done["finished"] and done["steps"] == STEPS and done["method"] == method
    assert (run_dir / "checkpoint.pt").stat().st_size > 20e6  # ViT-S alone is 22M parameters
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    for r in log:
        losses = {k: v for k, v in r.items() if k.startswith("loss")}
        assert "loss" in losses and all(math.isfinite(v) for v in losses.values()), r
        if "+ser" in method:
            assert "loss_equiv" in losses, r

    from harness.eval.features import run_features

    train, val = run_features(run_dir, data_root, cfg, quiet=True)
    dim = cfg["model"]["width"] * cfg["linear"]["n_last"]
    n_classes = CFG.n_classes
    for f, per_class in ((train, CFG.jpeg_train_per_class), (val, CFG.jpeg_val_per_class)):
        assert f["n_classes"] == n_classes, method
        assert f["cls"].shape == (n_classes * per_class, dim)
        assert torch.isfinite(f["cls"]).all() and f["cls"].std() > 0
        assert f["labels"].tolist() == [y for y in range(n_classes) for _ in range(per_class)]
