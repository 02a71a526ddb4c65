"""Nothing wrong is ever saved (issue 15): bad input stops with one line and exit 2, and every
result computed before it is byte-identical afterwards. Results are readable per the umask."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def harness(*args, umask=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def one_line_error(p, *needles):
    assert p.returncode == 2, p.stdout[-1000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RUN = ["run", "table2", "--preset", "micro", "--cluster", "debug", "--methods", "moco_v3"]


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """One micro run of Table 2's MoCo-v3 row, written under umask 022."""
    res = tmp_path_factory.mktemp("integrity") / "results"
    p = harness(*RUN, "--results", str(res), "runtime.quiet=true", umask=0o022)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return res


def test_data_root_at_a_synthetic_preset_is_refused(computed):
    before = snapshot(computed)
    p = harness(*RUN, "--results", str(computed), "--data-root", "/nonexistent")
    one_line_error(p, "--data-root /nonexistent", "synthetic", "--preset paper")
    assert snapshot(computed) == before


TAKE_OVER = """
from methods.base import AddOn
from methods.registry import register_addon


@register_addon("ser")
class MySER(AddOn):
    pass
"""


def test_a_plugin_cannot_take_over_a_registered_name(computed, tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text(TAKE_OVER)
    before = snapshot(computed)
    p = harness("--plugin", str(plugin), *RUN, "--results", str(computed))
    one_line_error(p, "add-on 'ser' is already registered", "methods/ser.py", "new one")
    assert snapshot(computed) == before


def test_a_plugin_that_fails_to_import_is_one_line_naming_file_and_line(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import math\n\nRATE = 1 / 0\n")
    p = harness("--plugin", str(plugin), "methods")
    one_line_error(p, str(plugin), "line 3", "ZeroDivisionError")


def test_synth_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    # An ImageNet-Sketch-like tree: `harness data synth` must not add train/ and val/ to it.
    root = tmp_path / "sketch"
    for c in ("n01440764", "n01443537"):
        (root / "sketch" / c).mkdir(parents=True)
        (root / "sketch" / c / "a.JPEG").write_bytes(b"not really a jpeg")
    before = snapshot(root)
    p = harness("data", "synth", "--root", str(root), "--classes", "2", "--size", "16")
    one_line_error(p, str(root), "not empty", "--force")
    assert snapshot(root) == before and sorted(os.listdir(root)) == ["sketch"]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_results_and_fixtures_follow_the_umask(computed, tmp_path):
    files = [p for p in computed.rglob("*.json") if "/eval/" in str(p) or p.name == "pretrain.json"]
    assert files and all(_mode(p) == 0o644 for p in files), {p: oct(_mode(p)) for p in files}
    assert _mode(next(computed.rglob("checkpoint.pt"))) == 0o644
    # A fixture tree (written in a temp folder, then renamed) and a strict umask both ways.
    for umask, want in ((0o022, 0o755), (0o077, 0o700)):
        out = tmp_path / f"fx{umask:o}"
        p = harness("data", "fixtures", "--out", str(out), "--only", "imagenet_sketch", umask=umask)
        assert p.returncode == 0, p.stderr
        assert _mode(out / "imagenet_sketch") == want
    from harness.io import write_json

    old = os.umask(0o027)
    try:
        assert _mode(write_json(tmp_path / "r.json", {"a": 1})) == 0o640
    finally:
        os.umask(old)


def test_sixteen_bit_pngs_decode_to_their_8_bit_values(tmp_path):
    import numpy as np
    from PIL import Image

    from harness.data.decode import load_rgb
    from harness.errors import HarnessError

    v = (np.arange(64 * 32).reshape(32, 64) * 31).astype(np.uint16)  # 0 … 63 457
    path = tmp_path / "deep.png"
    Image.fromarray(v).save(path)  # a 16-bit greyscale PNG
    with Image.open(path) as im:
        assert im.mode.startswith("I")
        assert np.asarray(im.convert("RGB")).mean() > 250  # what PIL alone makes of it
    got = np.asarray(load_rgb(str(path)))
    assert got.shape == (32, 64, 3)
    assert np.abs(got[..., 0].astype(int) - np.round(v / 257)).max() == 0
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    f = tmp_path / "float.tif"
    Image.fromarray(np.ones((4, 4), np.float32)).save(f)
    with pytest.raises(HarnessError, match="mode F"):
        load_rgb(str(f))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "table2", "--timeout", "0"], "--timeout: 0: give a number of seconds > 0"),
        (["run", "table2", "--parallel", "0"], "--parallel: 0: give at least 1 job"),
        (["run", "table2", "--retries", "-1"], "--retries: -1: give 0 or more"),
        (["plan", "table2", "--profile", "example", "--utilization", "40"], "0.4 for 40 %"),
        (["plan", "table2", "--profile", "example", "--step-time", "-1"], "seconds > 0"),
    ],
)
def test_meaningless_numbers_are_refused(args, needle):
    p = harness(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert needle in p.stderr.strip().splitlines()[-1], p.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "table2", "--preset", "micro", "--methods", ","], "names no method"),
        (["run", "table2", "--preset", "micro", "--methods", ""], "names no method"),
        (["config", "moco_v3+ser+ser"], "names add-on 'ser' twice"),
    ],
)
def test_empty_method_lists_and_repeated_add_ons_are_refused(args, needle, tmp_path):
    one_line_error(
        harness(*args, "--results", str(tmp_path)) if args[0] == "run" else harness(*args), needle
    )
