"""Training loop: exact resume, schedules, atomic checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from harness import config as C
from harness.errors import HarnessError
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
    from harness.train import loop, save

    root, d = data
    writes = []
    real_save = save.save_torch
    monkeypatch.setattr(
        save, "save_torch", lambda p, obj: writes.append(obj["step"]) or real_save(p, obj)
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

    # One clock for every reading the loop and its saves take, in their order.
    monkeypatch.setattr(loop, "time", Clock)
    monkeypatch.setattr(save, "time", Clock)
    assert run("minutes", ckpt_minutes=1, log_every=1) == [1, 2, 3, 4]
    # The clock is read where the host reads the device anyway: every log_every steps.
    assert run("window", ckpt_minutes=1, log_every=2) == [2, 4]


def test_nonfinite_loss_stops_before_a_poisoned_step_is_saved(data, tmp_path, monkeypatch):
    """The loss is read back every log_every steps only, yet a NaN at step 3 stops the run
    at the next read and no checkpoint holds anything trained on it."""
    from methods.moco_v3 import MoCoV3

    root, d = data
    real = MoCoV3.training_step
    calls = []

    def poisoned(self, batch, progress):
        terms = real(self, batch, progress)
        calls.append(progress.it)
        if progress.it == 2:  # the third step
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    monkeypatch.setattr(MoCoV3, "training_step", poisoned)
    cfg = C.with_runtime(
        C.resolve("moco_v3", "micro", max_steps=6), quiet=True, ckpt_every=2, log_every=4
    )
    with pytest.raises(HarnessError, match="loss became nan at step 3"):
        pretrain(cfg, tmp_path / "r", d)
    assert calls == [0, 1, 2, 3]  # found at the next read (step 4), not by a per-step sync
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2  # the step-4 checkpoint was never written
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    steps = [
        json.loads(ln)["step"] for ln in (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2]  # the finite rows before it are logged
    assert not (tmp_path / "r" / "pretrain.json").exists()


def test_nonfinite_gradient_with_a_finite_loss_is_never_checkpointed(data, tmp_path, monkeypatch):
    """Issue 15, item 4: a finite loss whose gradient is NaN at step 2 used to be stepped and
    checkpointed, poisoning every resume. Now the run stops at that step's read, and the step-1
    checkpoint stays the checkpoint."""
    from methods.moco_v3 import MoCoV3

    root, d = data
    real = MoCoV3.training_step

    def poisoned(self, batch, progress):
        terms = real(self, batch, progress)
        if progress.it == 1:  # the second step: value + 0, gradient 0 · ∞ = NaN
            p = self.trainable_parameters()[0]
            terms["loss_inv"] = terms["loss_inv"] + 0 * (p - p.detach()).abs().sqrt().sum()
        return terms

    monkeypatch.setattr(MoCoV3, "training_step", poisoned)
    cfg = C.with_runtime(
        C.resolve("moco_v3", "micro", max_steps=4), quiet=True, ckpt_every=1, log_every=4
    )
    with pytest.raises(HarnessError, match="a gradient became non-finite .* at step 2"):
        pretrain(cfg, tmp_path / "r", d)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    rows = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in rows] == [1]


def test_resuming_from_another_runs_checkpoint_is_refused(data, tmp_path):
    """Issue 15, item 1: a checkpoint copied from another run used to fail with a
    'Missing key(s)' traceback on resume; now one line names both runs, and nothing changes."""
    root, d = data
    moco = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=1), quiet=True)
    dino = C.with_runtime(C.resolve("dino", "micro", max_steps=2), quiet=True)
    pretrain(moco, tmp_path / "moco", d)
    pretrain(dino, tmp_path / "dino", d, stop_at=1)  # a DINO run, interrupted after step 1
    (tmp_path / "dino" / "checkpoint.pt").write_bytes(
        (tmp_path / "moco" / "checkpoint.pt").read_bytes()
    )

    def files():  # the run's files; the trainer lock names its last holder, so it is left out
        return {p: p.read_bytes() for p in (tmp_path / "dino").iterdir() if p.suffix != ".lock"}

    before = files()
    with pytest.raises(HarnessError, match=r"belongs to run moco_v3-micro-\w+ \(moco_v3\)"):
        pretrain(dino, tmp_path / "dino", d)
    assert files() == before


def test_a_log_line_cut_short_does_not_block_the_resume(data, tmp_path):
    """Issue 15, item 11: a kill mid-write leaves half a line at the end of log.jsonl; the
    resume used to fail parsing it. Now it is dropped and the steps after the checkpoint are
    logged again."""
    root, d = data
    cfg = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=3), quiet=True, ckpt_every=1)
    pretrain(cfg, tmp_path, d, stop_at=2)
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 3, "lr": 0.00')
    assert pretrain(cfg, tmp_path, d)["finished"]
    rows = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in rows] == [1, 2, 3]


def test_two_workers_start_and_give_the_batches_of_none(data, tmp_path, monkeypatch):
    """runtime.num_workers=2: two worker processes build the batches, and training sees
    bit-identical batches (hence weights) to building them in the training process."""
    import os

    from harness.data.batches import PretrainBatches

    root, d = data
    pids = tmp_path / "pids"
    pids.mkdir()
    real = PretrainBatches.__getitem__

    def noted(self, step):
        (pids / f"{os.getpid()}-{step}").touch()
        return real(self, step)

    monkeypatch.setattr(PretrainBatches, "__getitem__", noted)
    out = {}
    for n in (0, 2):
        cfg = C.with_runtime(
            C.resolve("moco_v3+ser", "micro", max_steps=4), quiet=True, num_workers=n
        )
        pretrain(cfg, tmp_path / f"w{n}", d)
        out[n] = _weights(tmp_path / f"w{n}")
        seen = {p.name.split("-")[0] for p in pids.iterdir()}
        assert len(seen) == max(n, 1) and (str(os.getpid()) in seen) == (n == 0), seen
        for p in pids.iterdir():
            p.unlink()
    for k in out[0]:
        assert torch.equal(out[0][k], out[2][k]), k


@pytest.mark.parametrize("flavour", ["kornia", "torchvision"])
def test_gpu_augment_sees_the_same_augmentations(data, tmp_path, flavour):
    """Rendering the photometric part after the workers (runtime.gpu_augment, here on the
    CPU) trains on the same draws: from the same weights, the first step's loss terms are
    equal (kornia: both modes render with the same float ops) or differ by PIL's rounding only
    (torchvision), far less than other draws (the next seed) move them
    (tests/data/test_batches.py compares the images themselves)."""
    root, d = data
    out = {}
    for on, seed in ((False, 0), (True, 0), (False, 1)):
        cfg = C.with_runtime(
            C.resolve("moco_v3+ser", "micro", seed, [f"views.photometric={flavour}"], max_steps=1),
            quiet=True,
            gpu_augment=on,
        )
        pretrain(cfg, tmp_path / f"{on}{seed}", d)
        out[on, seed] = json.loads((tmp_path / f"{on}{seed}" / "log.jsonl").read_text())
    for k in ("loss_inv", "loss_equiv"):
        modes = abs(out[True, 0][k] - out[False, 0][k])
        draws = abs(out[False, 1][k] - out[False, 0][k])
        if flavour == "kornia":
            assert modes == 0 and draws > 0, (k, modes, draws)
        else:  # SER's few B2 tokens at micro: its loss moves little between draws
            assert 0 < modes < draws / (2 if k == "loss_inv" else 1), (k, modes, draws)


@pytest.mark.slow
def test_compile_leaves_the_result_and_checkpoint_names_unchanged(data, tmp_path, monkeypatch):
    """runtime.compile=true compiles every backbone in place: the checkpoint keeps its
    parameter names and training computes the same weights. Dynamo's graph capture with the
    aot_eager backend (no C++ code generation: inductor takes minutes on 2 cores) is what
    could change semantics; inductor's kernels are checked on a GPU by ``harness bench``."""
    from harness.model.backbone import Backbone

    compiled = []
    real = Backbone.compile

    def aot_eager(self, **kw):
        compiled.append(self)
        return real(self, backend="aot_eager", **kw)

    monkeypatch.setattr(Backbone, "compile", aot_eager)
    root, d = data
    out = {}
    for on in (False, True):
        cfg = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=2), quiet=True, compile=on)
        pretrain(cfg, tmp_path / str(on), d)
        out[on] = _weights(tmp_path / str(on))
    assert len(compiled) == 2  # the online backbone and its momentum copy
    assert list(out[True]) == list(out[False])
    for k in out[True]:
        torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-4, atol=1e-5, msg=k)
