"""Bad input: one line on stderr naming the problem and the fix, exit 2, no traceback."""

import os
import subprocess
import sys


def harness(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def _one_line_error(p, *needles):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_method():
    _one_line_error(
        harness("audit", "moco_v4"),
        "unknown base method 'moco_v4'",
        "did you mean 'moco_v3'",
        "harness methods",
    )
    _one_line_error(harness("params", "dino+sre"), "unknown add-on 'sre'", "'ser'")


def test_unknown_table_and_preset(tmp_path):
    _one_line_error(harness("run", "table99", "--results", str(tmp_path)), "table2")
    _one_line_error(
        harness("run", "table2", "--preset", "huge", "--results", str(tmp_path)),
        "micro",
        "tiny",
        "paper",
    )


def test_missing_dataset_root(tmp_path):
    p = harness(
        "run",
        "table2",
        "--preset",
        "paper",
        "--cluster",
        "debug",
        "--results",
        str(tmp_path / "r"),
        env={"HARNESS_DATA_IMAGENET": ""},
    )
    _one_line_error(p, "--data-root")
    p = harness(
        "run",
        "table2",
        "--preset",
        "paper",
        "--cluster",
        "debug",
        "--results",
        str(tmp_path / "r"),
        "--data-root",
        str(tmp_path / "nope"),
    )
    _one_line_error(p, "does not exist", "--data-root")
    assert not (tmp_path / "r" / "runs").exists()


def test_non_imagefolder_root(tmp_path):
    from PIL import Image

    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "train" / f"{i}.png")
    p = harness(
        "run",
        "table2",
        "--preset",
        "paper",
        "--cluster",
        "debug",
        "--results",
        str(tmp_path / "r"),
        "--data-root",
        str(tmp_path / "flat"),
    )
    _one_line_error(p, "class folder", "sub-folder per class")


def test_unreachable_slurmctld(tmp_path):
    conf = tmp_path / "slurm.conf"
    # A controller on a port nothing listens on.
    conf.write_text(
        "ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\n"
        "SlurmctldPort=1\nAuthType=auth/none\nNodeName=localhost CPUs=1\n"
        "PartitionName=debug Nodes=localhost Default=YES\n"
    )
    p = harness(
        "run",
        "table2",
        "--preset",
        "micro",
        "--cluster",
        "slurm",
        "--results",
        str(tmp_path / "r"),
        env={"SLURM_CONF": str(conf)},
    )
    _one_line_error(p, "slurm")
    assert "local-up.sh" in p.stderr or "not installed" in p.stderr


def test_methods_lists_the_registry():
    p = harness("methods")
    assert p.returncode == 0
    for name in ("moco_v3", "dino", "barlow_twins", "ser"):
        assert name in p.stdout
