"""Training loop: exact resume, schedules, atomic checkpoints."""

from pathlib import Path

import pytest
import torch

from harness import config as C
from harness.train import lr_at, pretrain


@pytest.fixture(scope="module")
def data(micro_data):
    return micro_data


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.parametrize("name", ["moco_v3+ser", "dino"])
def test_resume_gives_identical_weights(name, data, tmp_path):
    results, root = data
    cfg = C.with_runtime(C.resolve(name, "micro", max_steps=4), quiet=True, ckpt_every=100)
    pretrain(cfg, tmp_path / "straight", root)
    first = pretrain(cfg, tmp_path / "resumed", root, stop_at=2)
    assert not first["finished"] and not (tmp_path / "resumed" / "pretrain.json").exists()
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 2
    second = pretrain(cfg, tmp_path / "resumed", root)
    assert second["finished"]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The log holds each step once.
    steps = [
        int(ln.split('"step": ')[1].split(",")[0])
        for ln in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]


def test_training_changes_weights_and_leaves_no_temp_files(data, tmp_path):
    results, root = data
    cfg = C.with_runtime(C.resolve("barlow_twins+ser", "micro", max_steps=2), quiet=True)
    torch.manual_seed(0)
    init = C.build_method(cfg).state_dict()
    pretrain(cfg, tmp_path / "r", root)
    after = _weights(tmp_path / "r")
    assert any(not torch.equal(init[k], after[k]) for k in init if "blocks.0." in k)
    assert not list((tmp_path / "r").glob(".*.tmp"))


def test_lr_schedule_warmup_then_cosine():
    r = {"base_lr": 1e-3, "lr_batch_scaling": True, "warmup_epochs": 2, "min_lr": 1e-6}
    peak = 1e-3 * 512 / 256
    assert lr_at(r, 0, 100, 10, 512) == 0.0
    assert lr_at(r, 10, 100, 10, 512) == pytest.approx(peak / 2)
    assert lr_at(r, 20, 100, 10, 512) == pytest.approx(peak)
    assert lr_at(r, 60, 100, 10, 512) == pytest.approx(1e-6 + (peak - 1e-6) / 2)
    assert lr_at(r, 100, 100, 10, 512) == pytest.approx(1e-6)
    r = {"base_lr": 1e-4, "lr_batch_scaling": True, "warmup_epochs": 0, "min_lr_frac": 0.001}
    assert lr_at(r, 100, 100, 10, 256) == pytest.approx(1e-7)


def test_checkpoints_by_time_and_by_steps_not_every_quarter(data, tmp_path, monkeypatch):
    from harness.train import loop

    root, d = data
    writes = []
    real_save = loop.save_torch
    monkeypatch.setattr(
        loop, "save_torch", lambda p, obj: writes.append(obj["step"]) or real_save(p, obj)
    )

    def run(tag, **rt):
        writes.clear()
        cfg = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=4), quiet=True, **rt)
        pretrain(cfg, tmp_path / tag, d)
        return list(writes)

    assert run("end", ckpt_minutes=0) == [4]  # a short run: only its end
    assert run("steps", ckpt_minutes=0, ckpt_every=2) == [2, 4]
    clock = iter(range(0, 10_000, 61))  # every reading a minute later

    class Clock:
        @staticmethod
        def time():
            return float(next(clock))

    monkeypatch.setattr(loop, "time", Clock)
    assert run("minutes", ckpt_minutes=1) == [1, 2, 3, 4]
