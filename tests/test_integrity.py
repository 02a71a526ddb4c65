"""Nothing wrong is ever saved: bad input stops with one line and exit 2, and every
result computed before it is byte-identical afterwards. Results are readable per the umask."""

import os
import stat
import sys
from pathlib import Path

import pytest

from tests.helpers import harness


def one_line_error(p, *needles):
    assert p.returncode == 2, p.stdout[-1000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_kept(root: Path, before: dict) -> None:
    """Every file of ``before`` byte-identical but the job records, which note the failed
    attempt (for `harness status`), and the lock files, which name their last holder; nothing
    else new: no result, no checkpoint."""

    def record(p: Path) -> bool:
        return (p.parent == root / "jobs" and p.suffix == ".json") or p.suffix == ".lock"

    after = snapshot(root)
    assert {p: after.get(p) for p in before if not record(p)} == {
        p: b for p, b in before.items() if not record(p)
    }
    assert all(record(p) for p in after if p not in before), [p for p in after if p not in before]


RUN = ["run", "table2", "--preset", "micro", "--cluster", "debug", "--methods", "moco_v3"]


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """One micro run of Table 2's MoCo-v3 row, written under umask 022."""
    res = tmp_path_factory.mktemp("integrity") / "results"
    p = harness(*RUN, "--results", str(res), "runtime.quiet=true", umask=0o022)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return res


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_plugin_cannot_take_over_a_registered_name(computed, tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text(TAKE_OVER)
    before = snapshot(computed)
    p = harness("--plugin", str(plugin), *RUN, "--results", str(computed))
    one_line_error(p, "add-on 'ser' is already registered", "methods/ser.py", "new one")
    assert snapshot(computed) == before


@pytest.mark.slow
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


@pytest.mark.slow
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
        (["config", "moco_v3+ser@r1"], "give 0 < r < 1"),
        (["config", "moco_v3+ser@r2"], "give 0 < r < 1"),
        (["config", "moco_v3+ser@tau0"], "the temperature τ must be > 0"),
    ],
)
@pytest.mark.slow
def test_empty_method_lists_and_repeated_add_ons_are_refused(args, needle, tmp_path):
    one_line_error(
        harness(*args, "--results", str(tmp_path)) if args[0] == "run" else harness(*args), needle
    )


def _tree(root: Path, splits: dict) -> Path:
    from PIL import Image

    for split, classes in splits.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (ord(c[-1]) % 255, 0, 0)).save(root / split / c / "0.png")
    return root


def test_val_labels_are_matched_to_train_by_class_name(tmp_path):
    from harness.data.imagefolder import ImageFolderDataset
    from harness.errors import HarnessError

    # A class fewer in val/: every other label keeps train/'s index (by position: 'n3' → 1).
    root = _tree(tmp_path / "sub", {"train": ["n1", "n2", "n3"], "val": ["n1", "n3"]})
    val = ImageFolderDataset(root, "val")
    assert val.classes == ["n1", "n2", "n3"] and [y for _, y in val.samples] == [0, 2]
    # A class train/ lacks: refused in one line, by name (it used to shift every later label).
    root = _tree(tmp_path / "extra", {"train": ["n1", "n3"], "val": ["n1", "n2", "n3"]})
    with pytest.raises(HarnessError, match=r"val has class folder\(s\) .*train lacks \(n2\)"):
        ImageFolderDataset(root, "val")
    p = harness("data", "check", "imagenet", "--root", str(root))
    assert p.returncode == 2 and "'n2'" in p.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_refused_by_name(computed, tmp_path):
    import json
    import shutil

    import torch

    res = tmp_path / "results"
    shutil.copytree(computed, res)
    (run,) = (res / "runs").iterdir()
    ck_path = run / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=False)
    ck["config"]["seed"] = 7  # another run's checkpoint: same method, another run id
    torch.save(ck, ck_path)
    # Copied in with its pretrain.json, which records the copied file's size.
    done = json.loads((run / "pretrain.json").read_text())
    done["checkpoint"]["bytes"] = ck_path.stat().st_size
    (run / "pretrain.json").write_text(json.dumps(done))
    # An evaluation still to compute must load it: drop one result and the cached features.
    (result,) = run.glob("eval/linear-imagenet-*.json")
    result.unlink()
    shutil.rmtree(run / "features")
    before = snapshot(res)
    p = harness(*RUN, "--results", str(res), "runtime.quiet=true")
    one_line_error(p, str(ck_path), "belongs to run moco_v3-micro-", "not to " + run.name)
    assert_kept(res, before)
    # Cut short: no longer the checkpoint pretrain.json recorded, so that is set aside (the
    # pretraining is not done) and resuming from the file stops in one line naming it.
    ck_path.write_bytes(ck_path.read_bytes()[:1000])
    before = snapshot(res)
    p = harness(*RUN, "--results", str(res), "runtime.quiet=true")
    one_line_error(p, str(ck_path), "cannot be read", "move it aside")
    assert ck_path.read_bytes() == before[ck_path]
    assert not (run / "pretrain.json").exists()
    assert (run / "pretrain.json.corrupt").read_bytes() == before[run / "pretrain.json"]
    assert not list(run.glob("eval/linear-imagenet-*.json"))


@pytest.mark.slow
def test_an_unreadable_result_is_named_set_aside_and_recomputed(computed, tmp_path):
    import json
    import shutil

    res = tmp_path / "results"
    shutil.copytree(computed, res)
    (bad,) = res.glob("runs/*/eval/linear-imagenet_v2-*.json")
    bad.write_text('{"metrics": {"top1": 1')  # cut short
    rest = {p: b for p, b in snapshot(res).items() if p != bad}
    # report: names the file, renders the rest.
    rep = harness(
        "report", "table2", "--preset", "micro", "--results", str(res), "--methods", "moco_v3"
    )
    assert rep.returncode == 0 and "Traceback" not in rep.stderr, rep.stderr
    assert f"cannot read {bad}" in rep.stderr
    md = (res / "report" / "micro" / "table2.md").read_text()
    assert "MoCo-v3" in md
    # status: flags it by path.
    st = harness(
        "status", "table2", "--preset", "micro", "--results", str(res), "--methods", "moco_v3"
    )
    assert st.returncode == 0 and f"unusable: cannot read {bad}" in st.stdout, st.stdout
    # run: moves it aside and computes it again; every other result is untouched.
    p = harness(*RUN, "--results", str(res), "runtime.quiet=true")
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"cannot read {bad}: moved to {bad.name}.corrupt" in p.stdout + p.stderr
    assert json.loads(bad.read_text())["metrics"]["top1"] >= 0
    assert bad.with_name(bad.name + ".corrupt").read_text() == '{"metrics": {"top1": 1'
    after = snapshot(res)
    # Lock files name their last holder; everything else is as it was.
    changed = [
        p
        for p, b in rest.items()
        if "report" not in p.parts and p.suffix != ".lock" and after[p] != b
    ]
    assert not changed, changed


@pytest.mark.slow
def test_a_result_copied_in_from_another_evaluation_is_not_taken_for_this_one(computed, tmp_path):
    """A result names its run, config and evaluation: Sketch's numbers copied over V2's file
    are flagged by status, left out by report, set aside and recomputed by run."""
    import json
    import shutil

    res = tmp_path / "results"
    shutil.copytree(computed, res)
    (v2,) = res.glob("runs/*/eval/linear-imagenet_v2-*.json")
    (sketch,) = res.glob("runs/*/eval/linear-imagenet_sketch-*.json")
    shutil.copy(sketch, v2)
    rest = {p: b for p, b in snapshot(res).items() if p != v2}
    st = harness(
        "status", "table2", "--preset", "micro", "--results", str(res), "--methods", "moco_v3"
    )
    assert f"unusable: {v2} holds another evaluation's result" in st.stdout, st.stdout
    rep = harness(
        "report", "table2", "--preset", "micro", "--results", str(res), "--methods", "moco_v3"
    )
    assert rep.returncode == 0 and f"{v2} holds another evaluation's result" in rep.stderr
    p = harness(*RUN, "--results", str(res), "runtime.quiet=true")
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"moved to {v2.name}.corrupt" in p.stdout + p.stderr
    assert json.loads(v2.read_text())["dataset"] == "imagenet_v2"
    after = snapshot(res)
    # Lock files name their last holder; everything else is as it was.
    changed = [
        q
        for q, b in rest.items()
        if "report" not in q.parts and q.suffix != ".lock" and after[q] != b
    ]
    assert not changed, changed


def _damage(path: Path, kind: str) -> None:
    import numpy as np
    from PIL import Image

    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "16-bit":
        Image.fromarray((np.arange(400).reshape(20, 20) * 160).astype(np.uint16)).save(
            path, format="PNG"
        )
    elif kind == "cmyk":
        Image.new("CMYK", (20, 20), (10, 200, 30, 0)).save(path.with_suffix(".jpg"))
        path.unlink()
    elif kind == "1x1":
        Image.new("RGB", (1, 1), (200, 10, 10)).save(path)


@pytest.mark.parametrize("kind", ["truncated", "zero-byte", "text", "16-bit", "cmyk", "1x1"])
def test_one_damaged_image_of_each_kind_in_a_micro_pretraining(kind, micro_data, tmp_path):
    """Undecodable files stop training with one line naming the file (in a loader worker as
    well); 16-bit, CMYK and 1×1 images train."""
    import shutil

    from harness import config as C
    from harness.errors import HarnessError
    from harness.train.loop import pretrain

    _, d = micro_data
    root = tmp_path / "data"
    shutil.copytree(d, root)
    victim = sorted((root / "train").rglob("*.png"))[5]
    _damage(victim, kind)
    # One epoch (every image is read) with a loader worker.
    cfg = C.with_runtime(C.resolve("moco_v3", "micro", max_steps=5), quiet=True, num_workers=1)
    if kind in ("truncated", "zero-byte", "text"):
        with pytest.raises(HarnessError) as e:
            pretrain(cfg, tmp_path / "run", root)
        from harness.cli import _one_line

        line = _one_line(e.value)
        assert "\n" not in line and str(victim) in line and "replace it or remove it" in line
        assert not (tmp_path / "run" / "checkpoint.pt").exists()
        # The loader worker is gone although the traceback (holding the loop's frame) lives
        # on: workers ignore SIGTERM, so one left behind would block the process's exit.
        import multiprocessing

        assert e.value.__traceback__ is not None and not multiprocessing.active_children()
    else:
        assert pretrain(cfg, tmp_path / "run", root)["finished"]


UNDECODABLE = ("truncated", "zero-byte", "text")


@pytest.mark.parametrize("kind", UNDECODABLE)
def test_skip_bad_skips_and_counts_an_undecodable_image(kind, micro_data, tmp_path):
    """``data.skip_bad=true``: the run finishes, and the log and pretrain.json name and count
    the skipped file; the setting enters the run's hash only when on."""
    import json
    import shutil

    from harness import config as C
    from harness.train.loop import pretrain

    _, d = micro_data
    root = tmp_path / "data"
    shutil.copytree(d, root)
    victim = sorted((root / "train").rglob("*.png"))[5]
    _damage(victim, kind)
    cfg = C.with_runtime(
        C.resolve("moco_v3", "micro", max_steps=5, overrides=["data.skip_bad=true"]),
        quiet=True,
        num_workers=1,
    )
    summary = pretrain(cfg, tmp_path / "run", root)
    assert summary["finished"] and summary["skipped_images"] == 1
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [p for r in rows for p in r.get("skipped_images", [])] == [str(victim)]
    off = C.resolve("moco_v3", "micro")
    assert C.run_id(C.resolve("moco_v3", "micro", overrides=["data.skip_bad=false"])) == C.run_id(
        off
    )
    assert C.run_id(C.resolve("moco_v3", "micro", overrides=["data.skip_bad=true"])) != C.run_id(
        off
    )


@pytest.mark.slow
def test_data_check_decodes_every_file_once_and_caches_the_verdicts(micro_data, tmp_path):
    """One damaged file of each kind: the undecodable three are listed by name (exit 2, one
    line on stderr), the 16-bit, CMYK and 1×1 ones decode; a second check decodes nothing; a
    repaired file is decoded again and the tree then passes."""
    import shutil

    from PIL import Image

    from harness.data import synthetic

    _, d = micro_data
    root = tmp_path / "data"
    shutil.copytree(d, root)
    # A user's tree, not a generated one: no manifest to name the damage as drift from.
    (root / synthetic.MANIFEST).unlink()
    files = sorted((root / "train").rglob("*.png"))
    victims = {}
    for kind, path in zip(("truncated", "zero-byte", "text", "16-bit", "cmyk", "1x1"), files[::7]):
        _damage(path, kind)
        victims[kind] = path.with_suffix(".jpg") if kind == "cmyk" else path
    n = len(list((root).rglob("*.png"))) + len(list(root.rglob("*.jpg")))
    cache = {"HARNESS_CACHE": str(tmp_path / "cache")}
    first = harness("data", "check", "imagenet", "--root", str(root), env=cache)
    assert first.returncode == 2
    problems = [ln for ln in first.stdout.splitlines() if ln.startswith("  problem:")]
    assert len(problems) == 3, first.stdout
    for kind in UNDECODABLE:
        assert sum(str(victims[kind]) in ln for ln in problems) == 1, (kind, problems)
    assert f"images decoded: {n} (0 known from the cache), 3 bad" in first.stdout
    first_bad = min(str(victims[k]) for k in UNDECODABLE)  # problems come in path order
    one_line_error(first, first_bad, "replace it or remove it", "2 more problem(s)")

    again = harness("data", "check", "imagenet", "--root", str(root), env=cache)
    assert f"images decoded: {n} ({n} known from the cache), 3 bad" in again.stdout
    assert again.stdout == first.stdout.replace("(0 known", f"({n} known")

    for kind in UNDECODABLE:  # repaired: new size and mtime, so decoded again
        Image.new("RGB", (20, 20), (1, 2, 3)).save(victims[kind], format="PNG")
    fixed = harness("data", "check", "imagenet", "--root", str(root), env=cache)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"images decoded: {n} ({n - 3} known from the cache), 0 bad" in fixed.stdout


@pytest.mark.slow
def test_check_tex_without_pdflatex_is_one_line_before_anything_is_rendered(computed, tmp_path):
    before = snapshot(computed)
    no_tex = {"PATH": str(Path(sys.executable).parent)}  # the venv's bin: no pdflatex there
    p = harness(
        "report",
        "table2",
        "--preset",
        "micro",
        "--results",
        str(computed),
        "--check-tex",
        env=no_tex,
    )
    one_line_error(p, "--check-tex needs pdflatex", "texlive-latex-base")
    assert snapshot(computed) == before


def _read_only(monkeypatch, folder: Path):
    """Writes below ``folder`` fail as on a read-only share (EACCES from the system call
    wrappers; the tests run as root, whom a chmod does not stop)."""
    import errno

    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path):
        if Path(path).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def fake_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        refuse(path)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_a_read_only_results_folder_is_one_line_and_changes_nothing(
    computed, tmp_path, monkeypatch, capsys
):
    import shutil

    from harness.cli import main

    res = tmp_path / "results"
    shutil.copytree(computed, res)
    before = snapshot(res)
    _read_only(monkeypatch, res)
    # Everything done: a read-only shared folder is fine for `run` ...
    assert main([*RUN, "--results", str(res), "runtime.quiet=true"]) == 0
    # ... but not for a job to add to it (another seed),
    assert main([*RUN, "--results", str(res), "--seed", "1"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"cannot write to the results folder {res}" in line
    assert "Permission denied" in line and "--results DIR" in line
    # and `report` names the file it cannot write.
    assert main(["report", "table2", "--preset", "micro", "--results", str(res)]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"cannot write {res}" in line and "Permission denied" in line
    monkeypatch.undo()
    assert snapshot(res) == before
