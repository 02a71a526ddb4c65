"""How data reaches a model: DataLoader workers sized by the CPUs the job was given, and a
file index so a dataset folder is walked once rather than by every job that reads it.

Workers: ``runtime.num_workers`` when the job sets it (a Slurm profile sets cpus_per_task - 1),
else the cores this process may use (its CPU affinity, shared with the other processes of its
node) minus the one that runs the model.

File index: listing a 1.28M-file tree on a shared filesystem takes minutes, and 42 jobs doing it
at once take longer. The first walk of a folder stores every directory below it (sub-folder and
file names) in ``<cache>/file-index/`` (``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness`` or
``~/.cache/harness``), keyed by the folder's resolved path. A later read stats each stored
directory (about a thousand for ImageNet) and uses the index only if every mtime is unchanged:
adding, removing or renaming anything in a directory changes that directory's mtime, so any such
change below the folder means a fresh walk. A cache that cannot be read, parsed or written is
ignored: the index is then just the walk.

Symbolic links: the walk starts from the folder's resolved path, so a linked dataset root (or
split, ``train -> /datasets/imagenet/train``) is walked as if it were there. Below it a link
that resolves inside the folder is left out (its target is listed under its own name, so each
file counts once and no class appears twice), a link to a directory above itself (a loop,
which would list the same files again at every depth) and a link to anything outside the
folder are refused, naming the link and its target. A tree that links class folders from
elsewhere on purpose (an ImageNet subset made of links to the full set) sets
``HARNESS_DATA_LINKS=follow``: links that lead out are then walked like the tree (their
directories' mtimes are in the index too); loops are refused either way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import stat
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from harness.errors import HarnessError
from harness.io import _atomic

LINKS_ENV = "HARNESS_DATA_LINKS"  # "follow": walk links that lead out of the tree
INDEX_VERSION = 2  # bumped when what a walk lists changes: an older index is walked again
# A directory modified this recently may change again within its mtime's granularity (coarse
# kernel clock, NFS): such a walk is used but not stored, so no later change can hide behind an
# unchanged mtime.
RACY_NS = 2_000_000_000


# ---- workers ----------------------------------------------------------------------------------


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def process_cores() -> int:
    """Cores this process may use: its CPU affinity divided among the processes sharing it —
    torchrun's local ranks (``LOCAL_WORLD_SIZE``) or the node's Slurm tasks
    (``SLURM_NTASKS_PER_NODE``). Slurm tasks bound to their own CPUs (affinity no larger than
    ``SLURM_CPUS_PER_TASK``, outside torchrun) share nothing, so nothing is divided then."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this OS
        cores = os.cpu_count() or 1
    share = _env_int("LOCAL_WORLD_SIZE") or _env_int("SLURM_NTASKS_PER_NODE") or 1
    per_task = _env_int("SLURM_CPUS_PER_TASK")
    if per_task and cores <= per_task and "TORCHELASTIC_RUN_ID" not in os.environ:
        share = 1
    return max(1, cores // share)


def default_workers(runtime: dict | None = None) -> int:
    """DataLoader workers: ``runtime["num_workers"]`` when set, else ``process_cores() - 1``
    (one core runs the model), at least 0."""
    n = (runtime or {}).get("num_workers")
    if n is not None:
        return max(0, int(n))
    return max(0, process_cores() - 1)


def loader_options(runtime: dict | None, device=None, *, persistent: bool = False) -> dict:
    """DataLoader keyword arguments for a job: ``default_workers`` workers, pinned memory when
    batches go to a CUDA device, 4 batches prefetched per worker.

    ``persistent`` keeps the workers between epochs. The evaluation loaders leave it off: the
    one-pass ones gain nothing, and a shuffled multi-epoch loader with persistent workers draws
    its worker seed once instead of once per epoch from the loader's generator, so later epochs
    would be shuffled (and augmented) differently than without it.
    """
    workers = default_workers(runtime)
    opts = {
        "num_workers": workers,
        "pin_memory": device is not None and torch.device(device).type == "cuda",
    }
    if workers > 0:
        opts["prefetch_factor"] = 4
        opts["persistent_workers"] = persistent
    return opts


# ---- file index -------------------------------------------------------------------------------


def cache_dir() -> Path | None:
    """The harness's cache folder: ``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness``, else
    ``~/.cache/harness``; None when there is no home to put it in."""
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "harness"
    try:
        return Path.home() / ".cache" / "harness"
    except RuntimeError:
        return None


class FileIndex:
    """Every directory below ``top`` as ``os.walk(top, followlinks=True)`` lists it, less the
    links ``_walk`` leaves out: for each, its sub-folder and other entry names. Paths handed
    to its methods are ``top`` or below it, spelled from ``top`` as given (``top / "cls"``),
    and come back spelled the same way."""

    def __init__(self, top, entries: dict[str, tuple[list[str], list[str]]]):
        self.top = Path(top)
        self._entries = entries  # "a/b" relative to top ("" for top) -> (dirs, sorted files)

    def _rel(self, path) -> str:
        return "/".join(Path(path).relative_to(self.top).parts)

    def dirs(self, path=None) -> list[str]:
        """Names of the sub-folders of ``path`` (default ``top``) that ``os.scandir`` reports as
        directories, sorted; [] when ``path`` was not walked."""
        entry = self._entries.get(self._rel(self.top if path is None else path))
        return list(entry[0]) if entry else []

    def walk(self, path=None) -> list[tuple[str, list[str]]]:
        """``[(dirpath, sorted file names) for dirpath, _, files in sorted(os.walk(path,
        followlinks=True))]``, read from the index."""
        path = self.top if path is None else path
        out, stack = [], [(self._rel(path), os.fspath(path))]
        while stack:
            rel, where = stack.pop()
            entry = self._entries.get(rel)
            if entry is None:  # unreadable, or not below top: os.walk yields nothing for it
                continue
            dirs, files = entry
            out.append((where, files))
            stack += [(f"{rel}/{d}" if rel else d, os.path.join(where, d)) for d in dirs]
        out.sort(key=lambda e: e[0])
        return out

    def __len__(self) -> int:
        """Files (non-directories) in the index."""
        return sum(len(files) for _, files in self._entries.values())


def _follow_out() -> bool:
    mode = os.environ.get(LINKS_ENV, "").strip().lower()
    if mode not in ("", "inside", "follow"):
        raise HarnessError(f"{LINKS_ENV}={mode!r} is not a link policy: use inside or follow")
    return mode == "follow"


def _walk(top: str) -> tuple[list[list], bool]:
    """[[rel, mtime_ns, dirs, files], …] for every directory ``os.walk(top, followlinks=True)``
    visits, and whether every one could be read. Each directory is statted before it is listed,
    so a change during the listing shows as a newer mtime next time."""
    rows, complete, follow = [], True, _follow_out()
    stack = [("", top)]
    while stack:
        rel, path = stack.pop()
        try:
            mtime = os.stat(path).st_mtime_ns
            dirs, files = [], []
            with os.scandir(path) as it:
                for e in it:
                    try:
                        is_dir = e.is_dir()
                    except OSError:
                        is_dir = False
                    if e.is_symlink() and _inside_link(top, path, e.path, is_dir, follow):
                        continue
                    (dirs if is_dir else files).append(e.name)
        except OSError:  # os.walk skips what it cannot list; not storable either
            complete = False
            continue
        dirs.sort()
        files.sort()
        rows.append([rel, mtime, dirs, files])
        stack += [(f"{rel}/{d}" if rel else d, os.path.join(path, d)) for d in reversed(dirs)]
    return rows, complete


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _inside_link(top: str, where: str, link: str, is_dir: bool, follow: bool = False) -> bool:
    """True for a link that resolves inside ``top`` (left out of the walk: its target is
    listed where it lies); a HarnessError for a loop or (unless ``follow``) a link leading out
    of ``top``. A dangling link is listed as a file (False), for the decode check to name."""
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HarnessError(f"{link} is a symbolic link loop: remove it") from None
        return False
    target = os.path.realpath(link)
    # A directory link to the folder it lies in or to one above it would list the same files
    # again at every depth (``where`` may lie behind a followed link: compare real paths).
    if is_dir and _inside(os.path.realpath(where), target):
        raise HarnessError(
            f"{link} is a symbolic link loop (-> {target}): remove it or link a folder "
            "that is not above it"
        )
    if _inside(target, top):
        return True
    if not follow:
        raise HarnessError(
            f"{link} links outside the dataset root {top} (-> {target}): copy the files in "
            f"or link the whole root, or set {LINKS_ENV}=follow to walk links that lead out"
        )
    return False


def subfolders(d) -> list[str]:
    """Sorted names of the sub-folders of ``d`` the file index lists: a link to a folder
    that lies inside ``d`` anyway is no folder of its own."""
    real = os.path.realpath(d)
    out = []
    for e in os.scandir(d):
        try:
            if not e.is_dir():
                continue
            if e.is_symlink() and _inside(os.path.realpath(e.path), real):
                continue
        except OSError:
            continue
        out.append(e.name)
    return sorted(out)


def _index_path(resolved: str) -> Path | None:
    base = cache_dir()
    if base is None:
        return None
    # What a walk lists depends on the link policy: one index per policy.
    policy = "follow" if _follow_out() else "inside"
    key = hashlib.sha1(f"{resolved}\0{policy}".encode()).hexdigest()[:20]
    return base / "file-index" / f"{key}.json"


def _load(path: Path, resolved: str) -> list[list] | None:
    """The stored rows, if the file is a readable index of ``resolved`` whose directories all
    still have their stored mtimes; None otherwise (missing, corrupt, stale)."""
    try:
        data = json.loads(path.read_bytes())
        if data["version"] != INDEX_VERSION or data["root"] != resolved:
            return None
        rows = data["dirs"]
        for rel, mtime, dirs, files in rows:
            if not (isinstance(rel, str) and isinstance(dirs, list) and isinstance(files, list)):
                return None
            st = os.stat(os.path.join(resolved, rel) if rel else resolved)
            if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns != mtime:
                return None
        return rows
    except Exception:  # unreadable, not JSON, wrong shape, a directory gone: walk again
        return None


def file_index(top, *, cache: bool = True) -> FileIndex:
    """The FileIndex of ``top``, read from the cache when still valid, else walked (and stored
    when the walk was complete and nothing in it changed in the last couple of seconds)."""
    resolved = str(Path(top).resolve())
    path = _index_path(resolved) if cache else None
    rows = _load(path, resolved) if path is not None else None
    if rows is None:
        started = time.time_ns()
        rows, complete = _walk(resolved)
        racy = any(mtime > started - RACY_NS for _, mtime, _, _ in rows)
        if path is not None and complete and not racy:
            doc = {"version": INDEX_VERSION, "root": resolved, "dirs": rows}
            with contextlib.suppress(OSError):  # a read-only or full cache: the walk still counts
                _atomic(path, lambda f: f.write(json.dumps(doc, separators=(",", ":")).encode()))
    return FileIndex(top, {rel: (dirs, files) for rel, _, dirs, files in rows})


# ---- augmentation draws independent of the workers ---------------------------------------------


class SeededDraws(Dataset):
    """``dataset`` whose item ``i`` in epoch ``e`` draws its random augmentation (torch's and
    Python's RNG: torchvision and timm use both) from its own seed, derived from (seed, e, i).

    A worker otherwise draws from its own stream, seeded per worker, so a shuffled, augmented
    loader would give other numbers for another ``runtime.num_workers`` — a setting that is not
    part of any result's key. ``set_epoch`` before each pass (workers copy it when they start).
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        from harness.data.batches import derive_seed

        s = derive_seed(self.seed, "draws", self.epoch, int(i))
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            try:
                return self.dataset[i]
            finally:
                random.setstate(state)
