"""``harness bench step``: the interleaved step benchmark at the micro preset (no timings are
asserted: only what the numbers are made of)."""

import json

import pytest

from harness import config as C
from harness.bench.step import bench_step
from harness.cli import main
from harness.errors import HarnessError
from harness.instruments.flops import config_step_flops


def test_rows_are_made_of_the_measured_times_and_the_counted_flops():
    r = bench_step(
        ["moco_v3", "moco_v3+ser"], "micro", steps=3, warmup=1, peak_tflops=2.0, quiet=True
    )
    base, ser = r["rows"]
    assert [row["method"] for row in r["rows"]] == ["moco_v3", "moco_v3+ser"]
    for row in r["rows"]:
        assert len(row["times_s"]) == 3 and all(t > 0 for t in row["times_s"])
        cfg = C.resolve(row["method"], "micro")
        flops = config_step_flops(cfg, row["batch_size"]) * row["batch_size"]
        assert row["tflops_per_step"] == pytest.approx(flops / 1e12)
        assert row["achieved_tflops"] == pytest.approx(flops / row["median_s"] / 1e12)
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 2.0)
        assert row["img_per_s"] == pytest.approx(row["batch_size"] / row["median_s"])
    assert base["ratio"] == 1.0 and ser["ratio"] == pytest.approx(
        ser["median_s"] / base["median_s"]
    )


def test_cli_takes_overrides_and_writes_json(tmp_path, capsys):
    rc = main(
        [
            "bench",
            "step",
            "moco_v3,dino",
            "--preset",
            "micro",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--results",
            str(tmp_path),
            "train.batch_size=8",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "1.000x" in out
    (path,) = (tmp_path / "bench").glob("step-micro-*.json")
    saved = json.loads(path.read_text())
    assert saved["overrides"] == ["train.batch_size=8"]
    assert [row["batch_size"] for row in saved["rows"]] == [8, 8]
    assert saved["code"]["version"]


def test_bad_requests_are_one_line_errors(capsys):
    with pytest.raises(HarnessError):
        bench_step([], "micro")
    assert main(["bench", "step", "moco_v3", "--preset", "micro", "--steps", "0"]) == 2
    assert main(["bench", "step", "moco_v3", "--preset", "micro", "train.batch_sise=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "train.batch_size" in err[1]
