"""``harness bench step A,B,… --preset P [key=value…]``: training steps of several methods,
interleaved in one process (A B A B …) so that clocks, thermals and other load hit every
method alike; each method's median step time, images/s, peak memory, achieved TFLOP/s, MFU
against a peak, and its ratio to the first method.

Every step is the pretraining loop's own ``train_step`` (schedules, autocast bf16 on CUDA,
fused AdamW, the method's clipping and EMA) on one fixed batch per method, built once through
the method's real view policy from noise images: data loading is not timed here.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from harness import config as C
from harness.data.batches import to_device
from harness.errors import HarnessError
from harness.instruments.audit import random_batch
from harness.instruments.flops import config_step_flops
from harness.io import write_json
from harness.provenance import code_version
from harness.schedule import Progress
from harness.train.loop import compile_backbones, lr_at, make_optimizer, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_step(
    methods: list[str],
    preset: str,
    overrides=(),
    steps: int = 10,
    warmup: int = 3,
    peak_tflops: float | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> dict:
    if not methods:
        raise HarnessError("bench step needs at least one method: e.g. moco_v3,moco_v3+ser")
    if steps < 1 or warmup < 0:
        raise HarnessError(f"--steps {steps} --warmup {warmup}: need steps ≥ 1 and warmup ≥ 0")
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    amp = {"device_type": "cuda", "dtype": torch.bfloat16} if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    runs = []
    for name in methods:
        cfg = C.resolve(name, preset, seed, overrides=overrides)
        torch.manual_seed(seed)
        method = C.build_method(cfg).to(device)
        if cfg["runtime"].get("compile"):  # runtime.compile=true: as the pretraining loop does
            compile_backbones(method)
        opt, groups = make_optimizer(method, device)
        batch = to_device(random_batch(method, cfg, seed, world=1), device)
        b = cfg["train"]["batch_size"]
        runs.append(
            {
                "name": name,
                "cfg": cfg,
                "method": method,
                "opt": opt,
                "groups": groups,
                "batch": batch,
                "batch_size": b,
                "times": [],
                "peak": 0,
                "flops": config_step_flops(cfg, b) * b,
            }
        )
    total = 1000  # a schedule position well inside warm-up-free territory is irrelevant here
    order = [(i, r) for i in range(warmup + steps) for r in runs]
    for i, r in tqdm(order, desc="bench step", disable=quiet, leave=False):
        progress = Progress(i, total, 100)
        lr = lr_at(r["cfg"]["recipe"], i, total, 100, r["batch_size"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        train_step(r["method"], r["opt"], r["groups"], r["batch"], progress, lr, amp)
        _sync(device)
        dt = time.perf_counter() - t0
        if i >= warmup:
            r["times"].append(dt)
            if device.type == "cuda":
                r["peak"] = max(r["peak"], torch.cuda.max_memory_allocated(device))
    first = statistics.median(runs[0]["times"])
    rows = []
    for r in runs:
        med = statistics.median(r["times"])
        tflops = r["flops"] / med / 1e12
        rows.append(
            {
                "method": r["name"],
                "batch_size": r["batch_size"],
                "median_s": med,
                "img_per_s": r["batch_size"] / med,
                "peak_mem_gib": r["peak"] / 2**30 if device.type == "cuda" else None,
                "tflops_per_step": r["flops"] / 1e12,
                "achieved_tflops": tflops,
                "mfu": tflops / peak_tflops if peak_tflops else None,
                "ratio": med / first,
                "times_s": r["times"],
            }
        )
    return {
        "kind": "step",
        "preset": preset,
        "overrides": list(overrides),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": "bfloat16" if amp else "float32",
        "threads": torch.get_num_threads(),
        "steps": steps,
        "warmup": warmup,
        "peak_tflops": peak_tflops,
        "torch": torch.__version__,
        "code": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }


def render(result: dict) -> str:
    head = (
        f"bench step @ {result['preset']} on {result['device']} ({result['dtype']}), "
        f"median of {result['steps']} interleaved steps after {result['warmup']} warm-up"
    )
    cols = (
        f"{'method':<28}{'batch':>6}{'s/step':>10}{'img/s':>10}{'peak GiB':>10}"
        f"{'TFLOP/s':>9}{'MFU':>7}{'ratio':>8}"
    )
    lines = [head, cols]
    for r in result["rows"]:
        mem = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"{r['method']:<28}{r['batch_size']:>6}{r['median_s']:>10.4f}"
            f"{r['img_per_s']:>10.1f}{mem:>10}{r['achieved_tflops']:>9.2f}{mfu:>7}"
            f"{r['ratio']:>7.3f}x"
        )
    return "\n".join(lines)


def save(result: dict, results_dir: Path) -> Path:
    stamp = result["created"].replace(":", "").replace("-", "")
    path = Path(results_dir) / "bench" / f"{result['kind']}-{result['preset']}-{stamp}.json"
    write_json(path, json.loads(json.dumps(result)))
    return path
