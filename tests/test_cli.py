"""Bad input: one line on stderr naming the problem and the fix, exit 2, no traceback."""

import pytest

from tests.helpers import harness


def _one_line_error(p, *needles):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.slow
def test_unknown_method():
    _one_line_error(
        harness("audit", "moco_v4"),
        "unknown base method 'moco_v4'",
        "did you mean 'moco_v3'",
        "harness methods",
    )
    _one_line_error(harness("params", "dino+sre"), "unknown add-on 'sre'", "'ser'")


@pytest.mark.slow
def test_unknown_table_and_preset(tmp_path):
    _one_line_error(harness("run", "table99", "--results", str(tmp_path)), "table2")
    _one_line_error(
        harness("run", "table2", "--preset", "huge", "--results", str(tmp_path)),
        "micro",
        "tiny",
        "paper",
    )


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_methods_lists_the_registry():
    p = harness("methods")
    assert p.returncode == 0
    for name in ("moco_v3", "dino", "barlow_twins", "ser"):
        assert name in p.stdout


@pytest.mark.slow
def test_departures_are_listed_by_the_cli_and_in_the_readme():
    """Every departure from the public code (SER's for pretraining and the linear probe, the
    evaluations' own elsewhere) is printed by `harness methods --departures` and has its row
    in README.md's two tables, with the switch that gives the other behaviour."""
    from pathlib import Path

    from harness.eval.departures import EVAL_DEPARTURES
    from methods.departures import DEPARTURES

    every = DEPARTURES + EVAL_DEPARTURES
    p = harness("methods", "--departures")
    assert p.returncode == 0
    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    table = readme.split("## Departures from the public code")[1].split("\n## ")[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [d.key for d in every]
    for d, row in zip(every, rows):
        assert f"{d.key} (" in p.stdout
        if d.other:
            assert d.other in p.stdout and d.other in row, d.key
    # Each entry with its effect measured now (tests/methods/test_departures.py checks the
    # numbers); none failed.
    assert p.stdout.count("\n  measured:    ") == len(every)
    assert "measurement failed" not in p.stdout
    md = harness("methods", "--departures", "--markdown")
    # The README's two tables, each as pasted (runs of lines starting with '|').
    blocks, block = [], []
    for ln in table.splitlines():
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            blocks, block = [*blocks, "\n".join(block)], []
    blocks += ["\n".join(block)] if block else []
    assert len(blocks) == 2
    _same_but_last_digits(md.stdout.strip(), "\n\n".join(blocks))


def _same_but_last_digits(computed: str, pasted: str) -> None:
    """README's pasted table equals the computed one in its words exactly and in its measured
    numbers to 2 % (another CPU or BLAS may move a last digit, not a claim)."""
    import math
    import re

    number = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
    fix = "README's table: paste `harness methods --departures --markdown`"
    words, got = number.split(computed), number.findall(computed)
    assert number.split(pasted) == words, fix
    theirs = number.findall(pasted)
    for a, b in zip(got, theirs, strict=True):
        assert math.isclose(float(a), float(b), rel_tol=0.02, abs_tol=1e-3), (a, b, fix)


# ---- key=value overrides ------------------------------------------------------------------


def _main_error(capsys, argv, *needles):
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_override_errors_are_one_line(capsys, tmp_path):
    run = ["run", "table2", "--preset", "micro", "--cluster", "debug", "--results", str(tmp_path)]
    _main_error(
        capsys, [*run, "train.batch_sise=8"], "'train.batch_sise'", "did you mean train.batch_size?"
    )
    _main_error(capsys, [*run, "train.batch_size=abc"], "train.batch_size=abc: expected an int")
    _main_error(capsys, [*run, "runtime.num_workers=x"], "runtime.num_workers=x: expected an int")
    _main_error(capsys, [*run, "train.batch_size"], "'train.batch_size'", "KEY=VALUE")
    _main_error(capsys, ["params", "moco_v3", "model.widht=8"], "did you mean model.width?")
    _main_error(
        capsys, ["flops", "dino", "--preset", "micro", "heads.width=1"], "heads.width_factor"
    )
    _main_error(capsys, ["audit", "dino", "--preset", "micro", "recipe.momentum=x"], "a float")
    _main_error(capsys, ["config", "dino", "--preset", "micro", "linear.epochs=[1]"], "an int")
    _main_error(capsys, ["status", "train.epochs=2", "--results", str(tmp_path)], "TABLE")
    assert not (tmp_path / "runs").exists()


def test_overrides_stand_anywhere_after_the_command():
    from harness.cli import parse_args

    a = parse_args(
        ["run", "table2", "--preset", "micro", "--cluster", "debug", "train.max_steps=2"]
        + ["linear.epochs=1"]
    )
    assert (a.table, a.preset, a.overrides) == (
        "table2",
        "micro",
        ["train.max_steps=2", "linear.epochs=1"],
    )
    a = parse_args(["status", "table2", "train.max_steps=2", "table3", "--preset", "micro"])
    assert a.tables == ["table2", "table3"] and a.overrides == ["train.max_steps=2"]
    a = parse_args(["plan", "table2", "--profile", "example", "train.epochs=300"])
    assert a.tables == ["table2"] and a.overrides == ["train.epochs=300"]
    assert parse_args(["config", "dino"]).overrides == []
    for bad in (["run", "table2", "--bogus"], ["methods", "train.epochs=1"]):
        with pytest.raises(SystemExit) as e:
            parse_args(bad)
        assert e.value.code == 2


def test_run_hands_overrides_and_runtime_to_the_plan(monkeypatch, tmp_path, capsys):
    from harness.cli import main
    from harness.run import launch, planning

    seen = {}

    def plan(spec, preset, results_dir, seed=0, runtime=None, only=None, overrides=()):
        seen.update(preset=preset, runtime=runtime, overrides=list(overrides))
        return []

    monkeypatch.setattr(planning, "plan", plan)
    monkeypatch.setattr(launch, "run", lambda *a, **k: launch.summary())
    over = ["train.max_steps=2", "linear.epochs=1", "runtime.ckpt_every=7"]
    argv = ["run", "table2", "--preset", "micro", "--results", str(tmp_path)]
    assert main([*argv, "--cluster", "debug", *over]) == 0
    assert seen["overrides"] == over and seen["preset"] == "micro"
    assert seen["runtime"]["ckpt_every"] == 7 and seen["runtime"]["num_workers"] is None
    # On Slurm the profile sizes the loader workers; the command line still wins.
    assert main([*argv, "--cluster", "slurm", "--profile", "example", *over]) == 0
    assert seen["runtime"]["num_workers"] == 8 and seen["runtime"]["ckpt_every"] == 7
    assert main([*argv, "--cluster", "slurm", "--profile", "example", "runtime.num_workers=2"]) == 0
    assert seen["runtime"]["num_workers"] == 2 and seen["runtime"]["ckpt_every"] is None
    capsys.readouterr()


def test_config_prints_the_resolved_config_as_yaml(capsys):
    import yaml

    from harness import config as C
    from harness.cli import main

    over = ["linear.epochs=7", "runtime.num_workers=2", "train.max_steps=5"]
    assert main(["config", "moco_v3+ser", "--preset", "micro", *over]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg == C.resolve("moco_v3+ser", "micro", overrides=over)
    assert cfg["linear"]["epochs"] == 7 and cfg["runtime"]["num_workers"] == 2
    assert {"heads", "views", "runtime", "iebench"} <= set(cfg) and "dims" not in cfg
    assert C.run_id(cfg) in out.splitlines()[0]
