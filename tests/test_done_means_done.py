"""Nothing wrong is marked done: a pretraining counts only with its final checkpoint, an
evaluation only with finite metrics in their range; anything else is set aside and computed
again, shown as missing (footnoted, never bolded) by the report; a full or forbidden disk is
named on one line with the path, and nothing half written stays."""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness import config as C
from harness import io
from harness.errors import HarnessError
from harness.report import collect
from harness.report.tables import render_table
from harness.run import jobs, launch
from tables import Column, TableSpec

SPEC = TableSpec(
    name="done",
    caption="Micro linear probe.",
    rows=("moco_v3",),
    columns=(Column("imagenet", "top1"), Column("imagenet", "top5")),
)
CONTEXT = {"preset": "micro", "scale": "tiny"}


def _plan(res: Path) -> list[jobs.Job]:
    return jobs.plan(SPEC, "micro", res, runtime=jobs.default_runtime("debug", res, None))


def _run(res: Path) -> list[str]:
    said: list[str] = []
    launch.run(_plan(res), "debug", res, log=said.append)
    return said


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """One micro pretraining and its linear probe, through `harness run`'s debug cluster."""
    res = tmp_path_factory.mktemp("done") / "results"
    _run(res)
    return res


@pytest.fixture
def res(computed, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(computed, out)
    return out


def _jobs(res: Path) -> tuple[jobs.Job, jobs.Job]:
    pre, ev = _plan(res)
    return pre, ev


def test_a_finished_pretraining_records_its_final_checkpoint(computed):
    pre, _ = _jobs(computed)
    rec = json.loads(Path(pre.result).read_text())
    ckpt = Path(pre.run_dir) / "checkpoint.pt"
    assert rec["checkpoint"] == {"step": rec["total_steps"], "bytes": ckpt.stat().st_size}
    assert jobs.read_result(pre) == (rec, None)


def test_a_pretraining_without_its_checkpoint_is_set_aside_and_trained_again(res):
    pre, _ = _jobs(res)
    ckpt = Path(pre.run_dir) / "checkpoint.pt"
    ckpt.unlink()
    assert "has no checkpoint.pt" in jobs.read_result(pre)[1]
    said = _run(res)
    assert any("has no checkpoint.pt" in s and "pretrain.json.corrupt" in s for s in said), said
    assert ckpt.exists() and jobs.read_result(pre)[1] is None


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: r["checkpoint"].update(step=r["total_steps"] - 1), "at its final step"),
        (lambda r: r["checkpoint"].update(bytes=r["checkpoint"]["bytes"] + 1), "bytes, not the"),
        (lambda r: r.pop("checkpoint"), "does not record a checkpoint"),
        (lambda r: r.update(steps=0, total_steps=0), "not a finished training"),
    ],
    ids=["earlier-step", "other-file", "unrecorded", "no-steps"],
)
def test_a_pretraining_whose_checkpoint_is_not_its_final_one_is_not_done(res, change, needle):
    pre, _ = _jobs(res)
    rec = json.loads(Path(pre.result).read_text())
    change(rec)
    Path(pre.result).write_text(json.dumps(rec))
    assert jobs.read_result(pre)[0] is None and needle in jobs.read_result(pre)[1]


def test_a_training_that_plans_no_step_marks_nothing_done(res, micro_data):
    pre, _ = _jobs(res)
    cfg = copy.deepcopy(pre.cfg)
    cfg["train"]["epochs"] = 0  # as if it got past the config's checks
    run_dir = res / "runs" / "no-steps"
    from harness.train import pretrain

    with pytest.raises(HarnessError, match="nothing is marked done"):
        pretrain(cfg, run_dir, micro_data[1])
    assert not (run_dir / "pretrain.json").exists()


def test_an_imported_run_with_its_backbone_only_stays_done(tmp_path):
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    io.write_json(run / "pretrain.json", {"run_id": "mine", "imported": {"format": "x"}})
    io.save_torch(run / "checkpoint.pt", {"step": 0, "model": {}})
    assert (
        jobs.result_problem(
            "pretrain", run / "pretrain.json", json.loads((run / "pretrain.json").read_text())
        )
        is None
    )


BAD = {
    "nan": (float("nan"), "metric top1 is nan"),
    "inf": (float("inf"), "metric top1 is inf"),
    "negative": (-3.0, "metric top1 is -3, outside its range [0, 100]"),
    "over-100": (140.0, "metric top1 is 140, outside its range [0, 100]"),
    "not-a-number": ("high", "metric top1 is 'high', not a number"),
}


def _damage(path: Path, kind: str) -> None:
    rec = json.loads(path.read_text())
    if kind == "missing":
        rec.pop("metrics")
    elif kind == "not-a-dict":
        rec = [rec]
    else:
        rec["metrics"]["top1"] = BAD[kind][0]
    path.write_text(json.dumps(rec))  # json writes NaN and Infinity as Python reads them


@pytest.mark.slow
@pytest.mark.parametrize("kind", [*BAD, "missing", "not-a-dict"])
def test_a_result_with_a_meaningless_metric_is_set_aside_and_recomputed(res, kind):
    _, ev = _jobs(res)
    bad = Path(ev.result)
    _damage(bad, kind)
    damaged = bad.read_text()
    rec, why = jobs.read_result(ev)
    needle = {"missing": "metrics are missing", "not-a-dict": "not a result record"}
    assert rec is None and (needle.get(kind) or BAD[kind][1]) in why, why
    said = _run(res)
    assert any(str(bad) in s and f"moved to {bad.name}.corrupt" in s for s in said), said
    top1 = json.loads(bad.read_text())["metrics"]["top1"]
    assert math.isfinite(top1) and 0 <= top1 <= 100
    assert bad.with_name(bad.name + ".corrupt").read_text() == damaged


def test_execute_refuses_to_write_metrics_out_of_range(res, monkeypatch):
    from harness.eval import registry

    _, ev = _jobs(res)
    Path(ev.result).unlink()
    monkeypatch.setitem(
        registry.EVALUATORS, ("linear", "imagenet"), lambda *a: {"top1": float("nan")}
    )
    with pytest.raises(HarnessError) as e:
        jobs.execute(ev)
    assert "\n" not in str(e.value) and "metric top1 is nan" in str(e.value)
    assert not Path(ev.result).exists()


def test_the_report_shows_a_meaningless_number_as_missing_footnoted_and_never_bold(tmp_path):
    spec = TableSpec(
        name="t",
        caption="c",
        rows=("a", "b", "c", "d", "e"),
        columns=(Column("imagenet", "top1"),),
    )
    values = {"a": 50.0, "b": float("inf"), "c": -3.0, "d": 140.0, "e": float("nan")}
    df = pd.DataFrame(
        [(m, "imagenet", "top1", v) for m, v in values.items()],
        columns=["method", "dataset", "metric", "value"],
    )
    paths = render_table(spec, df, tmp_path, CONTEXT, reference=pd.DataFrame())
    md = paths["md"].read_text()
    rows = {
        ln.split("|")[1].strip(): ln.split("|")[2].strip()
        for ln in md.splitlines()
        if ln.startswith("| ") and not ln.startswith("| Method")
    }
    assert rows == {"a": "**50.00**", "b": "--†", "c": "--†", "d": "--†", "e": "--†"}
    assert "outside its range [0, 100]" in md and "metric top1 is inf" in md
    tex = paths["tex"].read_text()
    assert r"\textbf{50.00}" in tex and tex.count(r"$^\dagger$") == 5
    assert "inf" not in paths["csv"].read_text().replace("metric top1 is inf", "")


def test_the_report_names_a_malformed_result_in_one_line_and_renders_the_rest(
    res, tmp_path, capsys
):
    _, ev = _jobs(res)
    _damage(Path(ev.result), "not-a-number")
    out = tmp_path / "report"
    collect.report(["table2"], "micro", res, out, rows=lambda spec: SPEC)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(ev.result) in err[0] and "not a number" in err[0], err
    md = (out / "done.md").read_text()
    assert "--†" in md and "**" not in md and "'high', not a number" in md


@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left on device"), (errno.EACCES, "permission denied")]
)
def test_a_storage_fault_during_a_write_is_one_line_and_leaves_nothing_half_written(
    tmp_path, monkeypatch, code, words
):
    path = tmp_path / "r.json"
    io.write_json(path, {"old": 1})

    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(io.StorageError) as e:
        io.write_json(path, {"new": 2})
    assert str(e.value).startswith(f"{words} writing {path}: ")
    assert "--results" in str(e.value) and "\n" not in str(e.value)
    assert e.value.errno == code and isinstance(e.value, OSError)
    assert sorted(os.listdir(tmp_path)) == ["r.json"] and io.read_json(path) == {"old": 1}


def test_a_torch_save_that_fails_on_a_full_disk_names_the_cause(tmp_path, monkeypatch):
    # torch.save reports a failed write as a RuntimeError without the errno.
    def fail(obj, f):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", fail)
    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    with pytest.raises(io.StorageError, match="no space left on device writing"):
        io.save_torch(tmp_path / "checkpoint.pt", {})
    assert os.listdir(tmp_path) == []


def test_a_pretraining_whose_checkpoint_hits_a_full_disk_fails_naming_it(micro_data, monkeypatch):
    res = micro_data[0]  # where the micro data already is
    rt = jobs.default_runtime("debug", res, None, ckpt_every=2)
    cfg = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=4, epochs=100), **rt)
    run_dir = res / "runs" / C.run_id(cfg)
    job = jobs.Job("pretrain", cfg, str(run_dir), str(run_dir / "pretrain.json"))
    real, saves = torch.save, []

    def full_after_one(obj, f, *a, **k):
        saves.append(obj.get("step") if isinstance(obj, dict) else None)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_after_one)
    with pytest.raises(HarnessError) as e:
        jobs.execute(job)
    ckpt = run_dir / "checkpoint.pt"
    assert str(e.value) == (
        f"{job.name}: no space left on device writing {ckpt}: free space or point --results "
        "elsewhere"
    )
    monkeypatch.undo()
    assert saves == [2, 4] and not (run_dir / "pretrain.json").exists()
    assert C.read_checkpoint(ckpt, cfg)["step"] == 2
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
