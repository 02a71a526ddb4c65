"""Presets: paper whole, tiny and micro as deltas that keep their tuned values."""

import pytest

from harness.config import presets
from harness.config.evaluations import EVALUATIONS
from harness.errors import HarnessError


def test_paper_evaluation_sections_are_the_code_defaults():
    paper = presets.get("paper")
    for name, section in EVALUATIONS.items():
        assert paper[name] == section, name
    assert paper["heads"] == {"width_factor": 1.0}
    assert paper["views"] == {
        "crop_min": None,
        "photometric": "kornia",
        "local_crops": "ser",
        "addon_data": "ser",
    }
    assert "dims" not in paper


def test_deltas_state_only_what_differs():
    assert set(presets.DELTAS["micro"]["model"]) == {"img_size", "patch_size", "width", "heads"}
    assert set(presets.DELTAS["tiny"]["linear"]) == {
        "epochs",
        "batch_size",
        "base_lrs",
        "select_from",
        "augment",
        "resize",
    }
    assert "knn" not in presets.DELTAS["tiny"]  # the same as paper's


def test_tiny_and_micro_keep_their_old_values():
    # Written out from the presets as they were as full dicts.
    tiny, micro = presets.get("tiny"), presets.get("micro")
    public = {"pos_interp": "public", "patch_embed_init": "public"}  # issue 13: every preset
    assert tiny["model"] == {
        "img_size": 32,
        "patch_size": 8,
        "width": 96,
        "depth": 12,
        "heads": 6,
        **public,
    }
    assert micro["model"] == {
        "img_size": 16,
        "patch_size": 4,
        "width": 32,
        "depth": 12,
        "heads": 2,
        **public,
    }
    assert tiny["train"] == {"batch_size": 64, "epochs": 8, "max_steps": None}
    assert micro["train"] == {"batch_size": 16, "epochs": 1, "max_steps": 3}
    assert tiny["data"] == {
        "dataset": "synthetic",
        "n_classes": 10,
        "train_per_class": 160,
        "val_per_class": 40,
        "size": 36,
        "skip_bad": False,  # issue 15, left out of the run hash while off
    }
    assert micro["data"]["train_per_class"] == 8 and micro["data"]["size"] == 20
    # local_crops: issue 24 (SER's loader/local4.py).
    assert tiny["views"] == {
        "crop_min": 0.3,
        "photometric": "kornia",
        "local_crops": "ser",
        "addon_data": "ser",
    }
    assert micro["views"] == {
        "crop_min": None,
        "photometric": "kornia",
        "local_crops": "ser",
        "addon_data": "ser",
    }
    assert tiny["recipe"] == {"base_lr": 4e-3, "warmup_epochs": 1}
    assert micro["recipe"] == {"base_lr": 4e-3, "warmup_epochs": 0}
    bt = {"barlow_twins": {"base_lr": 2e-3, "bias_lr": 2e-3}}
    assert micro["recipe_by_base"] == bt
    # DINO's teacher-temperature warm-up scaled like the lr's (10 of 100 epochs → 1 of 8).
    assert tiny["recipe_by_base"] == {**bt, "dino": {"warmup_teacher_temp_epochs": 1}}
    assert tiny["addons"] == {"ser": {"ratio": 0.125}}
    assert micro["addons"] == {"ser": {"ratio": 0.25}}
    # Issue 25: SER's sweep (two base lrs, the best of the last epochs on val, fp16) replaced
    # the one base lr 0.5 scored at the last epoch.
    lrs = {b: [0.5, 1.5] for b in ("moco_v3", "dino", "barlow_twins", "default")}
    old_tiny_linear = {
        "epochs": 100,
        "batch_size": 64,
        "base_lrs": lrs,
        "select_on": "val",
        "select_from": 80,
        "heldout": 0.01,
        "precision": "fp16",
        "n_last": 4,
        "augment": False,
        "resize": 36,
    }
    assert tiny["linear"] == old_tiny_linear
    assert micro["linear"] == {
        **old_tiny_linear,
        "epochs": 5,
        "batch_size": 32,
        "select_from": 3,
        "resize": 20,
    }
    assert tiny["knn"] == micro["knn"] == {"ks": [20], "temperature": 0.07}
    # Issue 25: SIE's head sees raw features.
    assert tiny["mlp"]["epochs"] == 100 and tiny["mlp"]["standardize"] is False
    assert micro["mlp"]["epochs"] == 2 and micro["mlp"]["hidden"] == 64
    old_tiny_finetune = {
        "epochs": 40,
        "batch_size": 64,
        "warmup_epochs": 1,
        "base_lr": 4e-3,
        "mixup": 0.0,
        "cutmix": 0.0,
        "auto_augment": None,
        "reprob": 0.0,
        "crop_scale": [0.3, 1.0],
        "repeated_aug": 1,  # issue 25: DeiT's ×3 is the paper preset's
    }
    assert {k: tiny["finetune"][k] for k in old_tiny_finetune} == old_tiny_finetune
    assert {k: micro["finetune"][k] for k in ("epochs", "batch_size", "warmup_epochs")} == {
        "epochs": 1,
        "batch_size": 16,
        "warmup_epochs": 0,
    }
    # Loader workers (tiny 2, micro 0) are runtime.num_workers now, for every evaluation.
    assert "workers" not in tiny["finetune"] and "workers" not in micro["finetune"]
    assert tiny["equivariance"]["n_images"] == 400 and micro["equivariance"]["n_images"] == 8
    assert tiny["transform_probe"]["per_class"] == 100
    assert {k: micro["transform_probe"][k] for k in ("per_class", "epochs", "seeds")} == {
        "per_class": 2,
        "epochs": 2,
        "seeds": 1,
    }
    assert (tiny["tsne"]["n_classes"], tiny["tsne"]["per_class"]) == (20, 40)
    assert (micro["tsne"]["n_classes"], micro["tsne"]["per_class"]) == (20, 4)
    # dims became one factor on the methods' paper widths.
    assert tiny["heads"] == {"width_factor": 0.125}
    assert micro["heads"] == {"width_factor": 0.015625}
    assert "dims" not in tiny and "dims" not in micro


def test_get_returns_a_copy_and_names_the_presets():
    presets.get("tiny")["train"]["batch_size"] = 1
    assert presets.get("tiny")["train"]["batch_size"] == 64
    with pytest.raises(HarnessError, match="unknown preset 'huge'; choose one of: paper, tiny"):
        presets.get("huge")
