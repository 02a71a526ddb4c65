"""``harness bench step`` and ``bench loader``: ratios measured in one run."""

from __future__ import annotations

from pathlib import Path

from harness.cli.args import DEFAULT_RESULTS


def cmd_bench_step(a) -> int:
    from harness.bench.step import bench_step, render, save

    peak = a.peak_tflops
    if peak is None and a.profile:
        from harness.run.profiles import load_profile

        peak = load_profile(a.profile).get("gpu_tflops")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    r = bench_step(methods, a.preset, a.overrides, a.steps, a.warmup, peak, a.seed)
    print(render(r))
    print(save(r, Path(a.results)))
    return 0


def cmd_bench_loader(a) -> int:
    from harness.bench.loader import bench_loader, render
    from harness.bench.step import save

    r = bench_loader(
        a.method, a.preset, Path(a.data_root), a.overrides, a.workers, a.batch, a.rounds, a.seed
    )
    print(render(r))
    print(save(r, Path(a.results)))
    return 0


def _common(s, fn) -> None:
    s.add_argument("--results", default=DEFAULT_RESULTS, help="JSON goes to RESULTS/bench/")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=fn, takes_overrides=True)


def add(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: ratios measured in one run")
    bench = bench.add_subparsers(dest="bench_cmd", required=True)
    s = bench.add_parser(
        "step",
        help="training steps of methods interleaved in one process: median time, img/s, "
        "peak memory, TFLOP/s, MFU, ratio to the first",
    )
    s.add_argument(
        "methods", help="comma-separated, the first is the baseline (moco_v3,moco_v3+ser)"
    )
    s.add_argument("--preset", default="paper")
    s.add_argument("--steps", type=int, default=10, help="timed steps per method (median)")
    s.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    s.add_argument(
        "--peak-tflops",
        type=float,
        help="peak TFLOP/s of the device for MFU (default: the --profile's gpu_tflops)",
    )
    s.add_argument("--profile", help="slurm/<NAME>.yaml or a path, for gpu_tflops")
    _common(s, cmd_bench_step)
    s = bench.add_parser(
        "loader",
        help="source images/s per loader worker: decode ceiling, plain torchvision, the split "
        "pipeline's CPU and device parts, the full CPU pipeline",
    )
    s.add_argument("method", help="e.g. moco_v3 or dino+ser (its view policy is measured)")
    s.add_argument("--preset", default="paper")
    s.add_argument("--data-root", required=True, help="an ImageFolder tree with train/")
    s.add_argument(
        "--workers",
        type=int,
        help="also time the DataLoader with N workers (default: the cores minus one; 0: skip)",
    )
    s.add_argument("--batch", type=int, default=64, help="images per batch (one rank's)")
    s.add_argument("--rounds", type=int, default=3, help="timed rounds per part (median)")
    _common(s, cmd_bench_loader)
