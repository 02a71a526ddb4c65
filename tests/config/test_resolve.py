"""key=value overrides of the resolved config: applied, type-checked, hashed or not."""

import json

import pytest
import yaml

from harness import config as C
from harness.config.evaluations import EVALUATIONS
from harness.errors import HarnessError

SECTIONS = [
    "method",
    "base",
    "preset",
    "seed",
    "model",
    "heads",
    "recipe",
    "addons",
    "versions",
    "train",
    "data",
    "views",
    *EVALUATIONS,
    "runtime",
]


def test_resolved_sections_are_plain_json():
    cfg = C.resolve("moco_v3+ser", "micro")
    assert list(cfg) == SECTIONS
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["heads"] == {"width_factor": 0.015625}
    assert cfg["views"] == {
        "crop_min": None,
        "photometric": "kornia",
        "local_crops": "ser",
        "addon_data": "ser",
        "policy": "2view",
    }
    assert cfg["addons"] == [{"name": "ser", "options": {"ratio": 0.25}}]
    assert cfg["runtime"] == C.RUNTIME and cfg["runtime"]["num_workers"] is None
    assert cfg["linear"]["epochs"] == 5 and cfg["iebench"] == EVALUATIONS["iebench"]


def test_overrides_reach_every_section():
    cfg = C.resolve(
        "barlow_twins",
        "tiny",
        overrides=[
            "train.batch_size=1024",
            "train.epochs=300",
            "train.max_steps=7",  # None in the preset: an int is accepted
            "recipe.base_lr=1.5e-4",
            "linear.epochs=90",
            "views.crop_min=0.2",
            "knn.ks=[10, 20]",
            "runtime.num_workers=10",
            "runtime.ckpt_every=500",
        ],
    )
    assert cfg["train"] == {"batch_size": 1024, "epochs": 300, "max_steps": 7}
    # The preset's per-base lr (Barlow Twins at tiny: 2e-3) is what the override replaces.
    assert cfg["recipe"]["base_lr"] == 1.5e-4 and cfg["recipe"]["bias_lr"] == 2e-3
    assert cfg["linear"]["epochs"] == 90 and cfg["linear"]["resize"] == 36
    assert cfg["views"]["crop_min"] == 0.2 and cfg["knn"]["ks"] == [10, 20]
    assert cfg["runtime"]["num_workers"] == 10 and cfg["runtime"]["ckpt_every"] == 500
    assert C.resolve("barlow_twins", "tiny")["recipe"]["base_lr"] == 2e-3
    # An int where a float is stored hashes as the float would.
    one = C.resolve("moco_v3", "micro", overrides=["recipe.base_lr=1"])
    assert one["recipe"]["base_lr"] == 1.0 and isinstance(one["recipe"]["base_lr"], float)
    assert C.run_id(one) == C.run_id(
        C.resolve("moco_v3", "micro", overrides=["recipe.base_lr=1.0"])
    )


def test_run_id_ignores_runtime_and_evaluation_sections():
    base = C.run_id(C.resolve("moco_v3", "micro"))
    for o in ("runtime.num_workers=2", "runtime.quiet=true", "linear.epochs=7", "mlp.lr=1e-4"):
        assert C.run_id(C.resolve("moco_v3", "micro", overrides=[o])) == base, o
    for o in ("train.max_steps=2", "recipe.base_lr=1e-3", "views.crop_min=0.2", "seed=1"):
        assert C.run_id(C.resolve("moco_v3", "micro", overrides=[o])) != base, o
    assert C.run_id(C.with_runtime(C.resolve("moco_v3", "micro"), threads=3)) == base
    # The keyword shortcut for train.KEY=value overrides.
    assert C.resolve("moco_v3", "micro", max_steps=2) == C.resolve(
        "moco_v3", "micro", overrides=["train.max_steps=2"]
    )


HINT = "(harness config moco_v3 --preset micro lists every key)"


@pytest.mark.parametrize(
    "override, needles",
    [
        (
            "train.batch_sise=8",
            ["unknown setting 'train.batch_sise'", "did you mean train.batch_size?", HINT],
        ),
        ("linear.epoch=3", ["did you mean linear.epochs?"]),
        ("runtime.num_worker=3", ["did you mean runtime.num_workers?"]),
        ("train.batch_size=abc", ["train.batch_size=abc: expected an int", "'abc'", HINT]),
        ("train.max_steps=2.5", ["train.max_steps=2.5: expected an int"]),
        ("views.crop_min=big", ["views.crop_min=big: expected a float"]),
        ("views.photometric=pil", ["views.photometric=pil: choose one of kornia, torchvision"]),
        ("runtime.num_workers=two", ["runtime.num_workers=two: expected an int"]),
        ("runtime.num_workers=-1", ["runtime.num_workers=-1: out of range", "[0, inf)"]),
        ("knn.ks=3", ["knn.ks=3: expected a list"]),
        ("train.batch_size", ["cannot read setting 'train.batch_size'", "KEY=VALUE"]),
        ("train.batch_size=[1", ["train.batch_size=[1: cannot parse"]),
        ("linear=3", ["'linear' is a section", "linear.epochs"]),
        ("addons.0.options.ratio=1", ["method name"]),
        ("method=dino", ["METHOD argument"]),
        ("views.policy=rot4x", ["views.policy=rot4x"]),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key(override, needles):
    with pytest.raises(HarnessError) as e:
        C.resolve("moco_v3", "micro", overrides=[override])
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_views_policy_must_supply_what_the_add_ons_need():
    assert C.resolve("moco_v3+ser", "micro", overrides=["views.policy=rot4"])["views"] == {
        "crop_min": None,
        "photometric": "kornia",
        "local_crops": "ser",
        "addon_data": "ser",
        "policy": "rot4",
    }
    with pytest.raises(HarnessError, match="views.policy=2view: .*moco_v3\\+stl.*@paired"):
        C.resolve("moco_v3+stl", "micro", overrides=["views.policy=2view"])


def test_runtime_settings_apply_only_runtime_overrides():
    rt = C.runtime_settings({"threads": 1}, ["train.epochs=3", "runtime.num_workers=2"])
    assert rt == {**C.RUNTIME, "threads": 1, "num_workers": 2}
    with pytest.raises(HarnessError, match="did you mean runtime.threads"):
        C.runtime_settings({}, ["runtime.thread=2"])


def test_write_config_keeps_the_first_unless_only_runtime_changed(tmp_path):
    cfg = C.with_runtime(C.resolve("moco_v3", "micro"), results_dir=str(tmp_path), quiet=True)
    path = C.write_config(tmp_path, cfg)
    assert path == tmp_path / "config.yaml"
    assert yaml.safe_load(path.read_text()) == cfg
    # Resumed with another runtime: the file records the runtime it runs with now.
    moved = C.with_runtime(cfg, num_workers=3)
    C.write_config(tmp_path, moved)
    assert yaml.safe_load(path.read_text()) == moved
    # An evaluation setting is not the pretraining's: the stored config stays.
    C.write_config(tmp_path, {**moved, "linear": {**moved["linear"], "epochs": 1}})
    assert yaml.safe_load(path.read_text()) == moved
    # Another run's config in this directory is refused.
    with pytest.raises(HarnessError, match="another run's config"):
        C.write_config(tmp_path, C.resolve("moco_v3", "micro", overrides=["train.max_steps=9"]))
    assert not list(tmp_path.glob(".*.tmp"))
