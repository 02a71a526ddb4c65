"""``harness bench loader METHOD --preset P --data-root DIR [--workers N]``: what one CPU core
of the data loader delivers, in source images per second, measured in one run, interleaved:

* ``decode``      — open and decode each JPEG to RGB only: the ceiling of any pipeline;
* ``torchvision`` — a plain torchvision pipeline: the base method's two views as
                    ``T.Compose`` (RandomResizedCrop … 2-D GaussianBlur … Normalize), the
                    reference every ratio is taken against;
* ``cpu part``    — the harness's split pipeline in a worker: decode, crop, resize, flip to
                    uint8, all parameters recorded (``runtime.gpu_augment``);
* ``full cpu``    — the harness's pipeline rendered entirely in the worker (no GPU):
                    the same, plus the photometric part with the separable blur;
* ``device part`` — the photometric part of the split pipeline, batched on the training
                    device (``finish``), in images per second of that device.

Per-worker figures run in this process on one thread. ``--workers N`` also runs the real
DataLoader with N workers on the split (or, without CUDA, the full CPU) pipeline.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from harness import config as C
from harness.data import ImageFolderDataset
from harness.data.batches import PretrainBatches, build_policy, to_device
from harness.data.deferred import finish
from harness.data.loading import default_workers
from harness.errors import HarnessError
from harness.provenance import code_version

PARTS = ("decode", "torchvision", "cpu part", "full cpu", "device part")


class Cycle(Dataset):
    """``n`` items drawn round-robin from a small tree: a benchmark needs more images than a
    fixture holds, and re-reading a page-cached file costs what reading a new one does."""

    def __init__(self, images, n: int):
        self.images, self.n = images, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.images[i % len(self.images)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_loader(
    method: str,
    preset: str,
    data_root,
    overrides=(),
    workers: int | None = None,
    batch: int = 64,
    rounds: int = 3,
    seed: int = 0,
    quiet: bool = False,
) -> dict:
    if batch < 2 or rounds < 1:
        raise HarnessError(f"--batch {batch} --rounds {rounds}: need batch ≥ 2 and rounds ≥ 1")
    cfg = C.resolve(method, preset, seed, overrides=overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = ImageFolderDataset(data_root, "train")
    model = C.build_method(cfg)
    policy = build_policy(model, cfg)
    del model
    n_steps = rounds + 1 + 8 * max(1, workers or 0)
    src = Cycle(images, batch * n_steps)
    split = PretrainBatches(src, policy, batch, seed)  # SER's subset as at this batch
    plain = [p.torchvision() for p in policy.augs.globals]

    def decode(step):
        for i in range(step * batch, (step + 1) * batch):
            src[i][0].load()

    def torchvision(step):
        for i in range(step * batch, (step + 1) * batch):
            img = src[i][0]
            for t in plain:
                t(img)

    def cpu_part(step):
        policy.defer = True
        return split[step]

    def full_cpu(step):
        policy.defer = False
        return split[step]

    deferred = {}

    def device_part(step):
        if step not in deferred:
            deferred[step] = cpu_part(step)  # built outside the clock
            return None
        to_device(finish(deferred.pop(step), device), device)
        _sync(device)

    fns = dict(zip(PARTS, (decode, torchvision, cpu_part, full_cpu, device_part)))
    times = {p: [] for p in PARTS}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-worker figures: a DataLoader worker runs one thread
    try:
        order = [(r, p) for r in range(rounds + 1) for p in PARTS]  # round 0 warms up
        for r, p in tqdm(order, desc="bench loader", disable=quiet, leave=False):
            if p == "device part":
                device_part(r)
            t0 = time.perf_counter()
            fns[p](r)
            dt = time.perf_counter() - t0
            if r:
                times[p].append(dt)
    finally:
        torch.set_num_threads(threads)
    rows = {p: batch / statistics.median(t) for p, t in times.items()}
    out = {
        "kind": "loader",
        "method": method,
        "preset": preset,
        "overrides": list(overrides),
        "data_root": str(Path(data_root).resolve()),
        "batch": batch,
        "rounds": rounds,
        "n_equiv": split.n_equiv,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "img_per_s_per_worker": rows,
        "ratio_to_torchvision": {p: v / rows["torchvision"] for p, v in rows.items()},
        "torch": torch.__version__,
        "code": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    n = default_workers({"num_workers": workers})
    if n:
        policy.defer = device.type == "cuda"
        out["loader"] = _loader(split, n, n_steps - rounds - 1, rounds + 1, device, quiet)
    return out


def _loader(batches, workers: int, steps: int, first: int, device, quiet: bool) -> dict:
    """The real DataLoader: ``workers`` processes, source images/s after the first batch
    each worker builds (process start-up is not throughput)."""
    loader = DataLoader(
        batches, batch_size=None, sampler=range(first, first + steps), num_workers=workers
    )
    it = iter(loader)
    for _ in range(min(workers, steps - 1)):
        next(it)
    t0, n = time.perf_counter(), 0
    for b in tqdm(it, desc=f"loader ×{workers}", disable=quiet, leave=False):
        n += batches.local_batch
        if isinstance(b["views"][0][0], dict):
            to_device(finish(b, device), device)
    dt = time.perf_counter() - t0
    return {
        "workers": workers,
        "pipeline": "split (gpu_augment)" if device.type == "cuda" else "full cpu",
        "img_per_s": n / dt,
        "img_per_s_per_worker": n / dt / workers,
    }


def render(result: dict) -> str:
    rows, ratios = result["img_per_s_per_worker"], result["ratio_to_torchvision"]
    lines = [
        f"bench loader {result['method']} @ {result['preset']} on {result['data_root']} "
        f"(batch {result['batch']}, median of {result['rounds']} interleaved rounds, one thread)",
        f"{'part':<14}{'img/s per worker':>18}{'vs torchvision':>16}",
    ]
    for p in PARTS:
        unit = f" ({result['device']})" if p == "device part" else ""
        lines.append(f"{p:<14}{rows[p]:>18.1f}{ratios[p]:>15.2f}x{unit}")
    if "loader" in result:
        ld = result["loader"]
        lines.append(
            f"DataLoader, {ld['workers']} workers, {ld['pipeline']}: {ld['img_per_s']:.1f} img/s "
            f"({ld['img_per_s_per_worker']:.1f} per worker)"
        )
    return "\n".join(lines)
