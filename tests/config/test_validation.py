"""Every setting out of its range, or settings that do not fit together, are refused where the
config is resolved (``harness config``, ``plan``, ``run``) and again where a job starts: one
line naming the key, the value and what is allowed, exit 2, never retried, nothing saved."""

import copy
import json
from pathlib import Path

import pytest

from harness import config as C
from harness.config import checks, presets
from harness.config.resolve import _leaves
from harness.errors import HarnessError
from harness.run import jobs, launch
from methods.registry import ADDONS, BASES

# (override, what the one line must say besides the key=value itself)
BAD = [
    ("train.batch_size=0", "[1, inf)"),
    ("train.batch_size=-1", "[1, inf)"),
    ("seed=-1", "[0, 2**32)"),
    ("seed=4294967296", "[0, 2**32)"),
    ("model.heads=3", "not a multiple of model.heads=3"),
    ("model.patch_size=0", "[1, inf)"),
    ("model.patch_size=3", "not a multiple of model.patch_size=3"),
    ("model.depth=0", "[1, inf)"),
    ("views.crop_min=1.5", "(0, 1]"),
    ("views.crop_min=0", "(0, 1]"),
    ("train.epochs=0", "[1, inf)"),
    ("train.max_steps=0", "[1, inf)"),
    ("linear.batch_size=0", "[1, inf)"),
    ("linear.base_lrs.moco_v3=[-0.1]", "(0, inf)"),
    ("linear.epochs=-1", "[1, inf)"),
    ("linear.n_last=13", "at most model.depth=12"),
    ("knn.ks=[20, 0]", "each entry allowed in [1, inf)"),
    ("mlp.epochs=0", "[1, inf)"),
    ("mlp.lr=0", "(0, inf)"),
    ("finetune.batch_size=0", "[1, inf)"),
    ("finetune.crop_scale=[0.9, 0.2]", "min ≤ max"),
    ("finetune.crop_scale=[0.2, 1.5]", "(0, 1]"),
    ("transform_probe.seeds=0", "[1, inf)"),
    ("iebench.lr=-1", "(0, inf)"),
    ("detection.iterations=0", "[1, inf)"),
    ("detection.lr_steps=[0.9, 0.5]", "increasing order"),
    ("recipe.base_lr=0", "(0, inf)"),
    ("recipe.tau=0", "(0, inf)"),
    ("runtime.num_workers=-1", "[0, inf)"),
    ("runtime.threads=-2", "[0, inf)"),
    ("runtime.ckpt_minutes=-1", "[0, inf)"),
]


def _one_error_line(capsys, argv: list[str]) -> str:
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("override,allowed", BAD, ids=[b[0] for b in BAD])
def test_out_of_range_setting_is_one_line_naming_key_value_and_range(capsys, override, allowed):
    line = _one_error_line(capsys, ["config", "moco_v3", "--preset", "micro", override])
    key, value = override.split("=")
    assert key in line and allowed in line, line
    with pytest.raises(HarnessError):
        C.resolve("moco_v3", "micro", overrides=[override])


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_option_out_of_range_is_refused_like_the_override(capsys, seed):
    line = _one_error_line(capsys, ["config", "moco_v3", "--preset", "micro", "--seed", seed])
    assert f"seed={seed}" in line and "[0, 2**32)" in line, line


def test_largest_seed_is_accepted():
    assert C.resolve("moco_v3", "micro", seed=2**32 - 1)["seed"] == 2**32 - 1


def test_plan_refuses_what_config_refuses(capsys, tmp_path):
    argv = ["plan", "table2", "--preset", "micro", "--profile", "example"]
    argv += ["--results", str(tmp_path), "model.depth=0"]
    line = _one_error_line(capsys, argv)
    assert "model.depth=0" in line and "[1, inf)" in line


@pytest.mark.parametrize(
    "arg", ["train.batch_size\n=3", "train.batch\nsize=3", "train.batch_size=[1,\n"]
)
def test_override_with_a_newline_gives_one_line(capsys, arg):
    line = _one_error_line(capsys, ["config", "moco_v3", "--preset", "micro", arg])
    assert "\\n" in line  # the argument shown escaped, as its repr


def test_every_preset_and_method_passes_validation():
    """No false positives: every shipped preset with every registered method and add-on."""
    names = [*BASES, *(f"moco_v3+{a}" for a in ADDONS), *(f"dino+{a}" for a in ("ser", "stl"))]
    for preset in presets.PRESETS:
        for name in names:
            cfg = C.resolve(name, preset)
            assert checks.validate(copy.deepcopy(cfg)) == cfg


def test_every_numeric_setting_has_a_range():
    """The table is complete: a new numeric setting without a range fails here."""
    missing = set()
    for preset in presets.PRESETS:
        for base in BASES:
            cfg = C.resolve(base, preset)
            for key, v in _leaves(cfg).items():
                if key.split(".")[0] in checks.UNCHECKED:
                    continue
                items = v if isinstance(v, list) else [v]
                numeric = any(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in items
                )
                if numeric and key not in checks.RANGES:
                    missing.add(key)
    assert not missing, sorted(missing)


def test_runtime_counts_may_be_null():
    rt = C.runtime_settings({}, ["runtime.threads=null", "runtime.num_workers=0"])
    assert rt["threads"] is None and rt["num_workers"] == 0
    with pytest.raises(HarnessError, match=r"runtime.threads=-1: out of range"):
        C.runtime_settings({}, ["runtime.threads=-1"])


def _pretrain_job(results: Path, **bad) -> jobs.Job:
    rt = {"results_dir": str(results), "quiet": True, "threads": 1}
    cfg = C.with_runtime(C.resolve("moco_v3", "micro"), **rt)
    run_dir = results / "runs" / C.run_id(cfg)
    for key, value in bad.items():  # tampered after planning, as a stored job could be
        section, name = key.split(".")
        cfg[section][name] = value
    return jobs.Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))


@pytest.mark.parametrize(
    "bad", [{"train.batch_size": 0}, {"train.batch_size": -1}, {"train.epochs": 0}]
)
def test_job_refuses_a_tampered_config_and_writes_nothing(tmp_path, bad):
    job = _pretrain_job(tmp_path, **bad)
    with pytest.raises(HarnessError, match=r"train\.(batch_size|epochs)=-?\d+: out of range"):
        jobs.execute(job)
    assert not Path(job.result).exists() and not Path(job.run_dir).exists()


@pytest.mark.slow
def test_local_cluster_marks_a_refused_job_failed_after_one_attempt(tmp_path):
    res = tmp_path / "results"
    job = _pretrain_job(res, **{"train.batch_size": 0})
    said = []
    counts = launch.run([job], "local", res, log=said.append, retries=2)
    assert counts["failed"] == 1, said
    (record,) = [json.loads(p.read_text()) for p in (res / "jobs").glob("*.json")]
    assert len(record["attempts"]) == 1, record  # bad input: not retried
    assert not any("retry" in s for s in said), said
    assert any("HarnessError" in s and "train.batch_size=0" in s for s in said), said
    assert not Path(job.result).exists()
