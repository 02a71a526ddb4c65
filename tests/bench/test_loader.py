"""``harness bench loader``: what each figure is made of, on the micro data (no timings are
asserted: speed targets live in the benchmark's own output)."""

import json

import pytest

from harness.bench import loader
from harness.cli import main


def test_every_part_is_timed_on_the_same_batches_and_ratios_are_to_torchvision(
    micro_data, monkeypatch
):
    _, root = micro_data
    calls = []
    real = loader.finish
    monkeypatch.setattr(loader, "finish", lambda b, d: calls.append(b) or real(b, d))
    r = loader.bench_loader(
        "moco_v3+ser@r0.25", "micro", root, workers=1, batch=8, rounds=2, quiet=True
    )
    rates = r["img_per_s_per_worker"]
    assert set(rates) == set(loader.PARTS) and all(v > 0 for v in rates.values())
    assert r["ratio_to_torchvision"]["torchvision"] == 1.0
    for p, v in rates.items():
        assert r["ratio_to_torchvision"][p] == pytest.approx(v / rates["torchvision"])
    assert r["n_equiv"] == 2  # SER's pairs are part of what the harness's parts build
    # The device part renders deferred batches (uint8 crops), one per timed and warm-up round.
    assert len(calls) == 3
    assert all(b["views"][0][0].dtype.is_floating_point for b in calls)  # rendered in place
    ld = r["loader"]
    assert ld["workers"] == 1 and ld["img_per_s"] == pytest.approx(ld["img_per_s_per_worker"])


def test_cli_writes_json_and_small_batches_name_a_ratio(micro_data, tmp_path, capsys):
    _, root = micro_data
    argv = ["bench", "loader", "moco_v3", "--preset", "micro", "--data-root", str(root)]
    rc = main(
        [*argv, "--batch", "4", "--rounds", "1", "--workers", "0", "--results", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "1.00x" in out and "full cpu" in out
    (path,) = (tmp_path / "bench").glob("loader-micro-*.json")
    saved = json.loads(path.read_text())
    assert saved["method"] == "moco_v3" and "loader" not in saved  # --workers 0: skipped
    # At the paper's r = 0.01 a batch of 8 has no SER pair: one line naming a ratio that fits.
    rc = main(
        [
            "bench",
            "loader",
            "moco_v3+ser",
            "--preset",
            "paper",
            "--data-root",
            str(root),
            "--batch",
            "8",
            "--workers",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "+ser@r0.2" in err[0]
