"""Loader workers sized by the process's CPUs, and the file index that spares re-walking a
dataset folder: same samples as the walk, invalidated by any change below the folder."""

import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import ImageFolder

from harness.data import loading
from harness.data.imagefolder import ImageFolderDataset, check_imagefolder
from harness.data.loading import default_workers, file_index, loader_options
from harness.data.readers import ImageNetSketch

ENV = ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_CPUS_PER_TASK", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def cores(monkeypatch):
    """Set this process's CPU affinity to n cores (and a clean launcher environment)."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)

    def set_cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    return set_cores


def test_default_workers_is_the_runtime_setting_else_the_cores_left(cores, monkeypatch):
    cores(16)
    assert default_workers(None) == default_workers({"num_workers": None}) == 15
    assert default_workers({"num_workers": 3}) == 3 and default_workers({"num_workers": 0}) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 ranks share the 16 cores
    assert default_workers(None) == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")  # two Slurm tasks on one CPU set
    assert default_workers(None) == 7
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert default_workers(None) == 7
    cores(8)  # each task bound to its own 8 cores: nothing shared
    assert default_workers(None) == 7
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # ... unless torchrun's ranks share them
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers(None) == 3
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x3)")  # not a count: ignored
    assert default_workers(None) == 7
    cores(1)
    assert default_workers(None) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # more ranks than cores: still 0, not negative
    assert default_workers(None) == 0


def test_loader_options_on_cpu_and_cuda(cores):
    cores(4)
    assert loader_options({"num_workers": 0}, "cpu") == {"num_workers": 0, "pin_memory": False}
    opts = loader_options(None, torch.device("cpu"))
    assert opts == {
        "num_workers": 3,
        "pin_memory": False,
        "prefetch_factor": 4,
        "persistent_workers": False,
    }
    assert loader_options({"num_workers": 2}, "cuda:0", persistent=True) == {
        "num_workers": 2,
        "pin_memory": True,
        "prefetch_factor": 4,
        "persistent_workers": True,
    }
    assert loader_options(None)["pin_memory"] is False
    # Valid DataLoader arguments, and an unshuffled loader keeps the order with workers.
    x = torch.arange(10)
    loader = DataLoader(TensorDataset(x), batch_size=3, **loader_options({"num_workers": 2}, "cpu"))
    assert torch.equal(torch.cat([b for (b,) in loader]), x)


# ---- file index ---------------------------------------------------------------------------


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _tree(root: Path) -> Path:
    """An ImageFolder split with what torchvision's walk has opinions on: nested and hidden
    folders, names that sort differently as paths, other extensions, a symlinked class."""
    top = root / "train"
    for f in ["b.png", "a.JPG", "notes.txt", "sub/c.png", "sub 1/d.png", "sub/deeper/e.jpeg"]:
        _write(top / "cat" / f)
    for f in ["x.png", ".hidden/y.png", "z.webp"]:
        _write(top / "dog" / f)
    _write(root / "elsewhere" / "emu" / "k.png")
    (top / "emu").symlink_to(root / "elsewhere" / "emu", target_is_directory=True)
    _write(top / "loose.png")
    return root


def _age(root: Path, seconds: float) -> None:
    """Backdate every directory below root: older than the racy window, and different from any
    earlier mtime."""
    t = time.time() - seconds
    for d, _, _ in os.walk(root, followlinks=True):
        os.utime(d, (t, t))


@pytest.fixture(autouse=True)
def follow_links_out(monkeypatch):
    """``_tree`` links a class folder from outside the split, as a subset of ImageNet made of
    links does: such trees are walked under the ``follow`` link policy."""
    monkeypatch.setenv("HARNESS_DATA_LINKS", "follow")


@pytest.fixture
def walks(monkeypatch):
    """Counts the index's walks of the file system."""
    calls = []
    real = loading._walk

    def counting(top):
        calls.append(top)
        return real(top)

    monkeypatch.setattr(loading, "_walk", counting)
    return calls


def _index_file(top: Path) -> Path:
    return loading._index_path(str(top.resolve()))


def test_imagefolder_samples_come_from_the_cached_index(tmp_path, walks, monkeypatch):
    root = _tree(tmp_path / "d")
    _age(root, 60)
    reference = ImageFolder(str(root / "train"))
    first = ImageFolderDataset(root, "train")
    assert len(walks) == 1 and _index_file(root / "train").is_file()
    assert first.samples == reference.samples and first.classes == reference.classes
    assert first.targets == reference.targets and first.class_to_idx == reference.class_to_idx
    assert [Path(p).name for p, _ in first.samples] == [
        "a.JPG", "b.png",  # cat/
        "c.png", "d.png", "e.jpeg",  # cat/sub/, cat/sub 1/, cat/sub/deeper/: sorted as strings
        "x.png", "z.webp", "y.png",  # dog/, dog/.hidden/ (torchvision walks hidden folders)
        "k.png",  # emu -> elsewhere/emu, followed
    ]  # fmt: skip
    assert first.info["counts"] == {"cat": 5, "dog": 3, "emu": 1}

    # Nothing walks the second time: neither the index nor torchvision's make_dataset.
    def no_walk(*a, **k):
        raise AssertionError("walked again")

    monkeypatch.setattr(os, "walk", no_walk)
    second = ImageFolderDataset(root, "train")
    assert len(walks) == 1
    assert second.samples == first.samples and second.info == first.info
    assert check_imagefolder(root, "train") == first.info
    assert not hasattr(second, "_index")


def test_a_fresh_tree_is_walked_but_not_stored(tmp_path, walks):
    root = _tree(tmp_path / "d")  # just written: its mtimes may still change within a tick
    ImageFolderDataset(root, "train")
    ImageFolderDataset(root, "train")
    assert len(walks) == 2 and not _index_file(root / "train").exists()
    _age(root, 60)
    ImageFolderDataset(root, "train")
    ImageFolderDataset(root, "train")
    assert len(walks) == 3 and _index_file(root / "train").is_file()


@pytest.mark.parametrize(
    "change",
    [
        lambda top: _write(top / "cat" / "new.png"),
        lambda top: _write(top / "cat" / "sub" / "deeper" / "new.png"),
        lambda top: (top / "dog" / "x.png").unlink(),
        lambda top: (top / "cat" / "b.png").rename(top / "cat" / "bb.png"),
        lambda top: _write(top / "fox" / "f.png"),  # a new class
        lambda top: _write(top / "cat" / "sub2" / "g.png"),  # a new sub-folder
        lambda top: _write(top.parent / "elsewhere" / "emu" / "l.png"),  # behind a symlink
    ],
)
def test_any_change_below_the_split_means_a_new_walk(tmp_path, walks, change):
    root = _tree(tmp_path / "d")
    _age(root, 60)
    ImageFolderDataset(root, "train")
    assert len(walks) == 1
    change(root / "train")
    _age(root, 30)
    changed = ImageFolderDataset(root, "train")
    assert len(walks) == 2
    assert changed.samples == ImageFolder(str(root / "train")).samples
    ImageFolderDataset(root, "train")  # the rescan was stored
    assert len(walks) == 2


def test_removed_folder_means_a_new_walk(tmp_path, walks):
    root = _tree(tmp_path / "d")
    _age(root, 60)
    ImageFolderDataset(root, "train")
    (root / "train" / "cat" / "sub" / "deeper" / "e.jpeg").unlink()
    (root / "train" / "cat" / "sub" / "deeper").rmdir()
    os.utime(root / "train" / "cat" / "sub", (1e9, 1e9))  # even with its parent backdated
    ds = ImageFolderDataset(root, "train")
    assert len(walks) == 2 and ds.samples == ImageFolder(str(root / "train")).samples


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\x00\xff" * 10, b"[]", b'{"version": 1}', "wrong shape"],
)
def test_a_corrupt_index_is_ignored_and_rewritten(tmp_path, walks, content):
    root = _tree(tmp_path / "d")
    _age(root, 60)
    top = root / "train"
    good = ImageFolderDataset(root, "train").samples
    path = _index_file(top)
    if content == "wrong shape":
        content = json.dumps(
            {"version": 1, "root": str(top.resolve()), "dirs": [[1, 2], None]}
        ).encode()
    path.write_bytes(content)
    assert ImageFolderDataset(root, "train").samples == good
    assert len(walks) == 2 and json.loads(path.read_text())["root"] == str(top.resolve())
    assert ImageFolderDataset(root, "train").samples == good and len(walks) == 2


def test_an_unwritable_cache_only_costs_the_walk(tmp_path, walks, monkeypatch):
    root = _tree(tmp_path / "d")
    _age(root, 60)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(blocker / "cache"))
    a = ImageFolderDataset(root, "train")
    b = ImageFolderDataset(root, "train")
    assert a.samples == b.samples == ImageFolder(str(root / "train")).samples
    assert len(walks) == 2


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "h"))
    assert loading.cache_dir() == tmp_path / "h"
    monkeypatch.delenv("HARNESS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert loading.cache_dir() == tmp_path / "x" / "harness"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert loading.cache_dir() == tmp_path / "home" / ".cache" / "harness"


def test_index_is_keyed_by_the_resolved_folder(tmp_path, walks):
    root = _tree(tmp_path / "d")
    _age(root, 60)
    (tmp_path / "alias").symlink_to(root)
    a = ImageFolderDataset(root, "train")
    b = ImageFolderDataset(tmp_path / "alias", "train")
    assert len(walks) == 1
    # Paths are spelled from the root as given, as the walk would spell them.
    assert b.samples == ImageFolder(str(tmp_path / "alias" / "train")).samples
    assert [p for p, _ in b.samples] == [
        p.replace(str(root), str(tmp_path / "alias")) for p, _ in a.samples
    ]


def test_reader_samples_from_the_index_match_the_walk(tmp_path, walks, monkeypatch):
    root = tmp_path / "sketch"
    for c in ("n01", "n02", "n03"):
        for f in ("sketch_10.JPEG", "sketch_2.JPEG", "deep/sketch_1.png", ".h/sketch_0.jpg"):
            _write(root / c / f)
    _write(root / ".tmp-gen" / "n04" / "sketch_0.JPEG")  # a generator's folder: never a class
    _age(root, 60)
    walked = []  # os.walk itself, hidden sub-folders skipped, as the reader's layout says
    for i, c in enumerate(("n01", "n02", "n03")):
        for top, dirs, names in sorted(os.walk(root / c, followlinks=True)):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            walked += [(str(Path(top) / n), i) for n in sorted(names)]
    first = ImageNetSketch(root)
    assert first.samples == walked and first.classes == ["n01", "n02", "n03"]
    assert len(walks) == 1
    monkeypatch.setattr(os, "walk", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    second = ImageNetSketch(root)
    assert second.samples == walked and second.info == first.info and len(walks) == 1


def test_file_index_walk_is_os_walk(tmp_path):
    root = _tree(tmp_path / "d")
    top = root / "train"
    index = file_index(top, cache=False)
    for d in (top, top / "cat", top / "cat" / "sub", top / "emu", top / "missing"):
        want = [(w, sorted(f)) for w, _, f in sorted(os.walk(d, followlinks=True))]
        assert index.walk(d) == want
    assert index.dirs() == ["cat", "dog", "emu"] and index.dirs(top / "cat") == ["sub", "sub 1"]
    assert index.dirs(top / "missing") == [] and len(index) == 11


def test_seeded_draws_give_the_same_augmentations_for_any_number_of_workers():
    """A shuffled, augmented evaluation loader (fine-tune, the augmented linear head) sees the
    same images with 0 or 2 workers, and other ones the next epoch."""
    import random

    import torch
    from torch.utils.data import DataLoader

    from harness.data.loading import SeededDraws

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):  # torch's and Python's RNG, as torchvision and timm draw
            return torch.rand(3) + random.random() + i

    def run(workers, epoch):
        draws = SeededDraws(Noisy(), seed=5)
        draws.set_epoch(epoch)
        g = torch.Generator().manual_seed(0)
        loader = DataLoader(draws, batch_size=4, shuffle=True, generator=g, num_workers=workers)
        return torch.cat(list(loader))

    a = run(0, 0)
    assert torch.equal(a, run(2, 0))
    assert not torch.equal(a, run(0, 1))
    # Without it, the workers' own streams give other draws (the test would be vacuous else).
    plain = [
        torch.cat(
            list(
                DataLoader(
                    Noisy(),
                    batch_size=4,
                    shuffle=True,
                    generator=torch.Generator().manual_seed(0),
                    num_workers=w,
                )
            )
        )
        for w in (0, 2)
    ]
    assert not torch.equal(*plain)
