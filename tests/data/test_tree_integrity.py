"""Dataset trees are checked, not trusted: symbolic links and generated sets' manifests."""

import json
import os
import shutil

import pytest
from PIL import Image

from harness.cli import main
from harness.config.paths import ensure_data
from harness.data.imagefolder import ImageFolderDataset, check_imagefolder
from harness.data.synthetic import MANIFEST, generate
from harness.errors import HarnessError

SMALL = dict(n_classes=3, train_per_class=2, val_per_class=1, size=16)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("pristine"), seed=0, **SMALL)


@pytest.fixture
def tree(pristine, tmp_path):
    """A private copy of the synthetic set (an ImageFolder root with train/ and val/)."""
    root = tmp_path / "set"
    shutil.copytree(pristine, root, symlinks=True)
    return root


def _check(root, capsys) -> tuple[int, str]:
    rc = main(["data", "check", "imagenet", "--root", str(root), "--layout-only"])
    return rc, capsys.readouterr().err.strip()


def _samples(root, split="train"):
    ds = ImageFolderDataset(root, split)
    return ds.classes, [(os.path.relpath(p, root), y) for p, y in ds.samples]


def test_symlink_loop_in_class_folder_refused_naming_it(tree, capsys):
    loop = tree / "train" / "c00_ell_solid" / "again"
    loop.symlink_to("..", target_is_directory=True)
    rc, err = _check(tree, capsys)
    assert rc == 2 and err.count("\n") == 0
    assert f"{loop} is a symbolic link loop" in err


def test_self_referencing_link_refused_as_loop(tree, capsys):
    link = tree / "train" / "c01_eff_solid" / "x.png"
    link.symlink_to(link.name)
    rc, err = _check(tree, capsys)
    assert rc == 2 and f"{link} is a symbolic link loop" in err


def test_link_outside_root_refused_naming_it_and_its_target(tree, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (16, 16)).save(outside / "9.png")
    link = tree / "train" / "c00_ell_solid" / "9.png"
    link.symlink_to(outside / "9.png")
    rc, err = _check(tree, capsys)
    assert rc == 2 and err.count("\n") == 0
    assert f"{link} links outside the dataset root" in err and str(outside / "9.png") in err
    assert "copy the files in or link the whole root" in err and "HARNESS_DATA_LINKS=follow" in err


def test_follow_policy_walks_links_out_but_still_refuses_loops(tree, tmp_path, monkeypatch):
    # An ImageNet subset made of links to class folders of the full set.
    full = tmp_path / "full"
    shutil.copytree(tree / "train" / "c00_ell_solid", full / "c09_extra")
    (tree / "train" / "c09_extra").symlink_to(full / "c09_extra", target_is_directory=True)
    monkeypatch.setenv("HARNESS_DATA_LINKS", "follow")
    classes, samples = _samples(tree)
    assert classes[-1] == "c09_extra" and sum(y == len(classes) - 1 for _, y in samples) == 2
    loop = full / "c09_extra" / "up"
    loop.symlink_to(full, target_is_directory=True)
    with pytest.raises(HarnessError, match="symbolic link loop"):
        _samples(tree)
    monkeypatch.setenv("HARNESS_DATA_LINKS", "sometimes")
    with pytest.raises(HarnessError, match="HARNESS_DATA_LINKS='sometimes' is not a link policy"):
        _samples(tree)


def test_links_inside_root_leave_classes_and_counts_unchanged(tree, pristine):
    before = _samples(tree)
    # A class folder linked under another name and a file linked into another class: their
    # targets are already in the tree, so neither adds a class, a sample or a label shift.
    (tree / "train" / "c00_alias").symlink_to("c02_pee_solid", target_is_directory=True)
    (tree / "train" / "c01_eff_solid" / "dup.png").symlink_to("../c00_ell_solid/0.png")
    assert _samples(tree) == before
    info = check_imagefolder(tree, "train")
    assert info["classes"] == before[0] and info["n_images"] == len(before[1]) == 6


def test_linked_dataset_root_and_split_are_followed(pristine, tmp_path):
    # A cluster user's tree: the root itself a link, or each split a link to a shared disk.
    (tmp_path / "root-link").symlink_to(pristine, target_is_directory=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    for split in ("train", "val"):
        (mine / split).symlink_to(pristine / split, target_is_directory=True)
    want = _samples(pristine)
    assert _samples(tmp_path / "root-link") == want
    assert _samples(mine) == want


def test_synth_names_and_rebuilds_a_tree_with_a_file_removed(tree, capsys):
    gone = tree / "val" / "c01_eff_solid" / "0.png"
    data = gone.read_bytes()
    gone.unlink()
    args = ["data", "synth", "--root", str(tree), "--seed", "0", "--classes", "3"]
    args += ["--size", "16", "--train-per-class", "2", "--val-per-class", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"synthetic set at {tree}: 1 file(s) missing, e.g. {gone}; rebuilding" in err
    assert gone.read_bytes() == data  # the same bytes as the first time


def test_ensure_data_rebuilds_a_tree_with_a_file_added(tree, pristine, capsys):
    stray = tree / "train" / "c00_ell_solid" / "extra.png"
    Image.new("RGB", (16, 16)).save(stray)
    cfg = {"data": {"dataset": "synthetic", **{k: v for k, v in SMALL.items()}}}
    ensure_data(cfg, tree)
    assert "1 file(s) it did not write" in capsys.readouterr().err and not stray.exists()
    assert _samples(tree) == _samples(pristine)


def test_data_check_names_a_resized_file_and_rewrites_nothing(tree, capsys):
    f = tree / "train" / "c02_pee_solid" / "1.png"
    f.write_bytes(f.read_bytes() + b"\0")
    size = f.stat().st_size
    rc, err = _check(tree, capsys)
    assert rc == 2 and err.count("\n") == 0
    assert f"generated set at {tree}: files renamed or resized" in err
    assert f.stat().st_size == size


def test_intact_tree_verified_without_decoding(tree, monkeypatch, capsys):
    manifest = json.loads((tree / MANIFEST).read_text())
    assert manifest["files"] == 9 and len(manifest["listing"]) == 64
    before = (tree / MANIFEST).stat().st_mtime_ns

    def no_decode(*a, **k):
        raise AssertionError("a manifest check must not open an image")

    monkeypatch.setattr(Image, "open", no_decode)
    generate(tree, seed=0, **SMALL)
    assert (tree / MANIFEST).stat().st_mtime_ns == before
    assert _check(tree, capsys)[0] == 0
