"""No file the harness reads can run code: every checkpoint is read with ``weights_only=True``
and every ``.npy`` without pickles, so a file whose unpickling would act (here: create a
marker file) is refused in one line, exit 2, and nothing it asks for happens."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat

import numpy as np
import pytest
import torch

from harness.checkpoints.layouts import FORMATS
from harness.cli import main
from harness.data import fixtures as fx
from tests.checkpoints.test_checkpoint_import import (
    dino_full,
    harness_checkpoint,
    moco_v3,
    ser,
    timm_sd,
)


class Touch:
    """Unpickled, creates ``marker``: the stand-in for any command a pickle can run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class Opens:
    """Unpickled, opens ``marker`` for writing (creating it)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_layouts(marker) -> dict:
    """Each format's own layout with a payload where that format keeps non-tensor data."""
    dino, _, _ = dino_full()
    moco, _, _ = moco_v3()
    timm = timm_sd()[0]
    serobj, _, _ = ser()
    return {
        "dino": {**dino, "args": Touch(marker)},
        "moco_v3": {**moco, "epoch": Opens(marker)},
        "timm": {**timm, "pos_embed": Touch(marker)},
        "ser": {**serobj, "args": Touch(marker)},
        "harness": {"step": 3, "model": {}, "config": Opens(marker), "optimizer": {}},
    }


def _refused(capsys, rc: int, marker: pathlib.Path, *names: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1, err
    assert "refused" in err and "could run code" in err, err
    assert any(n in err for n in names), err  # it names what the file holds
    assert not marker.exists()
    return err


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_of_a_hostile_file_is_refused_and_runs_nothing(fmt, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / f"{fmt}.pth"
    torch.save(_hostile_layouts(marker)[fmt], path)
    res = tmp_path / "res"
    rc = main(["import", "evil", str(path), "--format", fmt, "--results", str(res)])
    _refused(capsys, rc, marker, "getattr", "io.open", "builtins.open")
    assert not (res / "runs" / "evil").exists()


def test_an_import_row_of_a_hostile_file_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(_hostile_layouts(marker)["dino"], path)
    res = tmp_path / "res"
    argv = ["run", "table3", "--preset", "micro", "--cluster", "debug", "--results", str(res)]
    rc = main([*argv, "--methods", f"evil=import:{path}"])
    _refused(capsys, rc, marker, "getattr")
    assert not (res / "runs" / "evil").exists()


def _plant(run_dir: pathlib.Path, payload) -> None:
    """Replace the run's (read-only) checkpoint.pt with ``payload`` in a harness layout."""
    ck = run_dir / "checkpoint.pt"
    os.chmod(run_dir, os.stat(run_dir).st_mode | stat.S_IWUSR)
    ck.unlink()
    torch.save(payload, ck)


@pytest.fixture()
def imported_run(tmp_path):
    """(results, run folder) of a small timm import: a run folder every command reads."""
    path = tmp_path / "mine.pth"
    torch.save(timm_sd()[0], path)
    res = tmp_path / "res"
    assert main(["import", "mine", str(path), "--format", "timm", "--results", str(res),
                 "model.heads=3"]) == 0  # fmt: skip
    return res, res / "runs" / "mine"


def test_export_of_a_run_with_a_hostile_checkpoint_is_refused(imported_run, tmp_path, capsys):
    res, run_dir = imported_run
    marker = tmp_path / "marker"
    _plant(run_dir, {"step": 0, "model": Touch(marker), "config": {}})
    capsys.readouterr()
    out = tmp_path / "out.pth"
    rc = main(["export", "mine", "--format", "timm", "--out", str(out), "--results", str(res)])
    _refused(capsys, rc, marker, "getattr")
    assert not out.exists() and not out.with_suffix(".safetensors").exists()


def test_evaluation_of_a_run_with_a_hostile_checkpoint_runs_nothing(imported_run, tmp_path, capsys):
    res, run_dir = imported_run
    marker = tmp_path / "marker"
    _plant(run_dir, {"step": 0, "model": Opens(marker), "config": {}})
    capsys.readouterr()
    argv = ["run", "table3", "--preset", "micro", "--cluster", "debug", "--results", str(res)]
    rc = main([*argv, "--methods", "mine"])
    out, err = capsys.readouterr()
    assert rc != 0 and not marker.exists(), out + err
    assert "checkpoint.pt holds io.open" in err and "could run code" in err, err


def test_evaluation_entry_point_refuses_a_hostile_checkpoint_in_one_line(imported_run, tmp_path):
    from harness.config import load_trained
    from harness.errors import HarnessError

    _, run_dir = imported_run
    marker = tmp_path / "marker"
    _plant(run_dir, {"step": 0, "model": Touch(marker), "config": {}})
    with pytest.raises(HarnessError) as e:
        load_trained(run_dir)
    msg = str(e.value)
    assert "\n" not in msg and str(run_dir / "checkpoint.pt") in msg and "could run code" in msg
    assert not marker.exists()


@pytest.fixture(scope="module")
def iebench(tmp_path_factory):
    cfg = fx.Config(seed=1, n_classes=2, size=16, objects_per_class=2, views=2)
    return fx.write_fixtures(tmp_path_factory.mktemp("fixtures"), cfg, only=["3diebench"])[
        "3diebench"
    ]


@pytest.mark.parametrize("layout_only", [False, True])
def test_3diebench_split_file_holding_a_pickle_is_refused(iebench, layout_only, tmp_path, capsys):
    root = tmp_path / "3diebench"
    shutil.copytree(iebench, root)
    marker = tmp_path / "marker"
    names = np.load(root / "val_images.npy")
    hostile = np.array([*names.tolist(), Touch(marker)], dtype=object)
    np.save(root / "val_images.npy", hostile, allow_pickle=True)
    argv = ["data", "check", "3diebench", "--root", str(root)]
    rc = main([*argv, "--layout-only"] if layout_only else argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "val_images.npy is an object array" in err and "refused" in err, err
    assert not marker.exists()


def test_3diebench_string_split_files_are_read_without_pickles(iebench, capsys):
    assert np.load(iebench / "val_images.npy", allow_pickle=False).dtype.kind == "U"
    assert main(["data", "check", "3diebench", "--root", str(iebench), "--layout-only"]) == 0


def test_harness_checkpoints_and_published_layouts_load_under_weights_only(tmp_path):
    """What training and the published formats store (numpy RNG state, argparse.Namespace,
    numpy loss lists, heads as torch.nn layers) is allowed explicitly, nothing more."""
    from harness.config.build import safe_load

    rng = {"numpy": np.random.get_state(), "python": __import__("random").getstate()}
    torch.save({"rng": [rng], "scalar": np.float64(2.5)}, tmp_path / "ck.pt")
    back = safe_load(tmp_path / "ck.pt")
    assert np.array_equal(back["rng"][0]["numpy"][1], rng["numpy"][1])
    assert back["scalar"] == 2.5
    torch.save(ser()[0], tmp_path / "ser.pth")
    assert safe_load(tmp_path / "ser.pth", published=True)["args"].equiv_mode == "erl"
    from harness.config.build import UnsafeFile

    with pytest.raises(UnsafeFile, match="argparse.Namespace"):
        safe_load(tmp_path / "ser.pth")  # a harness checkpoint never holds one
    harness_checkpoint(tmp_path / "h.pt")
    assert safe_load(tmp_path / "h.pt")["step"] == 3


def test_a_cut_short_checkpoint_still_reads_as_cut_short(imported_run, tmp_path, capsys):
    res, run_dir = imported_run
    ck = run_dir / "checkpoint.pt"
    data = ck.read_bytes()
    os.chmod(run_dir, os.stat(run_dir).st_mode | stat.S_IWUSR)
    ck.unlink()
    ck.write_bytes(data[: len(data) // 2])
    rc = main(["export", "mine", "--format", "timm", "--results", str(res)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be read" in err and "could run code" not in err, err


def test_export_writes_safetensors_that_import_reads_back(imported_run, tmp_path):
    from safetensors.torch import load_file

    from harness.config import load_trained

    res, run_dir = imported_run
    out = tmp_path / "out.pth"
    assert (
        main(["export", "mine", "--format", "timm", "--out", str(out), "--results", str(res)]) == 0
    )
    st = out.with_suffix(".safetensors")
    assert set(load_file(str(st))) == set(torch.load(out, weights_only=True))
    assert (
        json.loads((tmp_path / "out.safetensors.json").read_text())["harness_model"]["heads"] == 3
    )
    assert main(["import", "back", str(st), "--format", "timm", "--results", str(res)]) == 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a, b = (load_trained(res / "runs" / n).eval_backbone() for n in ("mine", "back"))
    with torch.no_grad():
        assert torch.equal(a.features(x), b.features(x))


@pytest.mark.parametrize("name", ["moco_v3-micro-0123456789ab", "dino-paper-abcdef012345"])
def test_an_import_named_like_a_run_id_is_refused(name, tmp_path, capsys):
    path = tmp_path / "t.pth"
    torch.save(timm_sd()[0], path)
    res = tmp_path / "res"
    rc = main(["import", name, str(path), "--format", "timm", "--results", str(res),
               "model.heads=3"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "trained run's id" in err, err
    assert not (res / "runs" / name).exists()


def test_an_import_cannot_take_the_folder_of_a_trained_run(tmp_path, capsys):
    path = tmp_path / "t.pth"
    torch.save(timm_sd()[0], path)
    res = tmp_path / "res"
    trained = res / "runs" / "my_run"
    trained.mkdir(parents=True)
    (trained / "config.yaml").write_text("method: moco_v3\npreset: micro\n")
    rc = main(["import", "my_run", str(path), "--format", "timm", "--results", str(res),
               "model.heads=3"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "is not an import" in err, err
    assert sorted(p.name for p in trained.iterdir()) == ["config.yaml"]
