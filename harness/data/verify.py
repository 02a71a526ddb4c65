"""Every image (and video) of a dataset decoded once, for ``harness data check``.

A layout check cannot see a JPEG cut short by a failed copy, a zero-byte file or text saved as
``.jpg``; training meets it hours later. So the check decodes every file the way training and
the evaluations do (``load_rgb``; ImageNet-P's ``decode``) and lists each one that fails.

At ImageNet scale that is 1.3M decodes, so the verdicts are cached per file, keyed by its path,
size and modification time (and by ``VERSION``, which a change of what counts as bad bumps): a
second check only stats the files. The cache is one SQLite file in the harness's cache folder;
each batch of verdicts is one transaction, so an interrupted check keeps what it decoded.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from harness.data.loading import cache_dir, process_cores
from harness.errors import HarnessError

VERSION = 1  # bump when what counts as an undecodable file changes: every verdict is redone
CHUNK = 256  # files per worker task and per cache transaction


def _image(path: str) -> None:
    from harness.data.decode import load_rgb

    load_rgb(path)


def _video(path: str) -> None:
    from harness.data.readers.imagenet_p import decode

    decode(path)


KINDS: dict[str, Callable[[str], None]] = {"image": _image, "video": _video}


def _verdicts(kind: str, paths: Sequence[str]) -> list[str]:
    """'' for a file that decodes, else the one-line problem (run in a worker process)."""
    check = KINDS[kind]
    out = []
    for p in paths:
        try:
            check(p)
            out.append("")
        except HarnessError as e:
            out.append(str(e))
        except Exception as e:  # a decoder's own failure: still this file's problem
            out.append(f"{p} does not decode ({type(e).__name__}: {e})")
    return out


@dataclass
class Verified:
    files: int = 0
    decoded: int = 0  # files decoded now (the rest had a cached verdict)
    bad: dict[str, str] = field(default_factory=dict)  # path -> problem, in path order


def _open_cache() -> sqlite3.Connection | None:
    d = cache_dir()
    if d is None:
        return None
    try:
        d.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(d / "decoded.sqlite", timeout=60)
        db.execute(
            "CREATE TABLE IF NOT EXISTS verdict (kind TEXT, path TEXT, size INTEGER, "
            "mtime_ns INTEGER, version INTEGER, problem TEXT, PRIMARY KEY (kind, path))"
        )
        return db
    except sqlite3.Error:  # a read-only or full cache folder: decode, cache nothing
        return None


def verify(
    paths: Sequence[Path], kind: str = "image", workers: int | None = None, quiet: bool = False
) -> Verified:
    """Decode every file of ``paths`` that has no cached verdict for its current size and
    mtime; return the bad ones with their problem. ``workers``: processes (default: every core
    this process may use)."""
    stats: dict[str, tuple[int, int]] = {}
    verdicts: dict[str, str] = {}
    for p in map(str, paths):
        try:
            st = os.stat(p)
            stats[p] = (st.st_size, st.st_mtime_ns)
        except OSError as e:  # never cached: it may be readable next time
            verdicts[p] = f"{p} cannot be read ({e.strerror}): fix its permissions or remove it"
    res = Verified(files=len(stats) + len(verdicts))
    db = _open_cache()
    if db is not None:
        rows = db.execute(
            "SELECT path, size, mtime_ns, problem FROM verdict WHERE kind = ? AND version = ?",
            (kind, VERSION),
        )
        for path, size, mtime, problem in rows:
            if stats.get(path) == (size, mtime):
                verdicts[path] = problem
    todo = [p for p in stats if p not in verdicts]
    res.decoded = len(todo)
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    n = max(1, workers if workers is not None else process_cores())
    # disable=None: a bar on a terminal only, never in a log or a captured stderr.
    bar = tqdm(
        total=len(todo),
        desc=f"decoding {kind}s",
        unit=kind,
        disable=True if quiet or not todo else None,
    )
    pool = None
    if n > 1 and len(chunks) > 1:
        # forkserver: workers do not inherit the parent's threads (torch's) mid-lock.
        pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver"))
    try:
        results = (
            pool.map(_verdicts, [kind] * len(chunks), chunks)
            if pool
            else (_verdicts(kind, c) for c in chunks)
        )
        for chunk, got in zip(chunks, results):
            verdicts.update(zip(chunk, got))
            bar.update(len(chunk))
            if db is not None:
                with db:  # one transaction per chunk: an interrupted check keeps what it did
                    db.executemany(
                        "INSERT OR REPLACE INTO verdict VALUES (?, ?, ?, ?, ?, ?)",
                        [(kind, p, *stats[p], VERSION, v) for p, v in zip(chunk, got)],
                    )
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
        if db is not None:
            db.close()
    res.bad = {p: verdicts[p] for p in sorted(verdicts) if verdicts[p]}
    return res


def manifest_problems(root: Path) -> list[str]:
    """A generated tree (the synthetic set, a fixture) against its manifest: a file removed,
    added or resized since it was written is named. Stats only; the check never rewrites."""
    from harness.data import synthetic
    from harness.data.fixtures.config import MANIFEST as FIXTURE

    for name, fix in (
        (synthetic.MANIFEST, f"`harness data synth --root {root}` with its parameters"),
        (FIXTURE, f"`harness data fixtures --force` for {root}"),
    ):
        try:
            manifest = json.loads((root / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict):
            continue
        expected = None
        if name == synthetic.MANIFEST:
            try:
                expected = synthetic.expected_files(manifest)
            except (KeyError, TypeError):
                expected = None
        drift = synthetic.tree_drift(root, manifest, expected)
        if drift:
            return [f"generated set at {root}: {drift}: rebuild it with {fix}"]
    return []


def check_dataset(reader, root, *, decode: bool = True, quiet: bool = False):
    """``reader``'s layout inventory of ``root`` and, with ``decode``, every image (or, for a
    video set, every video) under it decoded: one line of counts, each bad file a problem."""
    from harness.data.readers.base import files_under

    inv = reader.inventory(Path(root))
    if not decode or not Path(root).is_dir():
        inv.problems += manifest_problems(Path(root)) if Path(root).is_dir() else []
        return inv
    kind = getattr(reader, "media", "image")
    exts = (".mp4",) if kind == "video" else IMG_EXTENSIONS
    v = verify(files_under(Path(root), exts), kind, quiet=quiet)
    inv.found[f"{kind}s decoded"] = (
        f"{v.files} ({v.files - v.decoded} known from the cache), {len(v.bad)} bad"
    )
    inv.problems += list(v.bad.values())
    # After the files that fail to decode: those name the damage, this only that there is some.
    inv.problems += manifest_problems(Path(root))
    return inv
