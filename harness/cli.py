"""``harness``: run tables, report them, and inspect methods. ``harness COMMAND --help``.

Every command that resolves a config (run, plan, status, report, audit, flops, params, config)
takes trailing ``key=value`` overrides of it: ``harness run table2 train.epochs=300
linear.epochs=90 runtime.num_workers=10``; ``harness config METHOD`` lists every key."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from harness.errors import HarnessError

DEFAULT_RESULTS = os.environ.get("HARNESS_RESULTS", "results")


def cmd_run(a) -> int:
    import tables
    from harness.run import jobs, launch

    spec = _with_rows(tables.load(a.table), a.methods, a.results, importing=True)
    if a.data_root:
        from harness import config as C
        from harness.config import presets

        C.refuse_unused_data_root(a.preset, presets.get(a.preset)["data"]["dataset"], a.data_root)
    profile = None
    if a.cluster == "slurm" or a.profile:
        from harness.run.profiles import load_profile

        profile = load_profile(a.profile or "local")
    rt = jobs.default_runtime(
        a.cluster,
        a.results,
        a.data_root,
        wandb=a.wandb or None,
        threads=(profile or {}).get("cpus_per_task"),
    )
    rt = _runtime(rt, profile if a.cluster == "slurm" else None, a)
    plan = jobs.plan(spec, a.preset, a.results, a.seed, rt, only=a.only, overrides=a.overrides)
    summary = launch.run(
        plan,
        a.cluster,
        Path(a.results),
        profile,
        timeout_s=a.timeout,
        retries=a.retries,
        parallel=a.parallel,
    )
    print(json.dumps(summary))
    return 1 if summary["failed"] or summary["blocked"] else 0


def _runtime(rt: dict, profile: dict | None, a) -> dict:
    """The jobs' runtime settings: the cluster's defaults, then a Slurm profile's ``runtime:``
    (where loader workers are sized), then the command line (its flags, its ``runtime.*``)."""
    from harness import config as C

    if profile:
        rt = {**rt, **profile.get("runtime", {})}
        if a.data_root:
            rt["data_root"] = a.data_root
        if a.wandb:
            rt["wandb"] = True
    return C.runtime_settings(rt, a.overrides)


def _planned(a):
    import tables
    from harness.run import jobs

    names = a.tables or tables.available()
    out = []
    for name in names:
        spec = _with_rows(tables.load(name), getattr(a, "methods", None), a.results)
        out.append((name, jobs.plan(spec, a.preset, a.results, a.seed, overrides=a.overrides)))
    return out


def cmd_status(a) -> int:
    from harness.run import status

    if a.tables:
        for name, plan in _planned(a):
            rows = [status.job_status(Path(a.results), j) for j in plan]
            print(status.render(rows, f"{name} @ {a.preset}") + "\n")
        return 0
    if a.overrides:
        raise HarnessError(
            f"{' '.join(a.overrides)}: overrides select runs of a TABLE "
            f"(harness status TABLE --preset P key=value …)"
        )
    recorded = status.recorded(Path(a.results))
    if not recorded:
        raise HarnessError(
            f"no jobs recorded in {a.results}: nothing was submitted there yet "
            f"(harness run TABLE …), or pass --results DIR"
        )
    rows = [status.job_status(Path(a.results), j) for j in recorded]
    print(status.render(rows, f"every job submitted from {a.results}"))
    return 0


def cmd_plan(a) -> int:
    from harness.run import plan as estimate
    from harness.run.profiles import load_profile

    profile = load_profile(a.profile)
    if a.utilization is not None:
        profile["utilization"] = a.utilization
    for name, plan in _planned(a):
        rows = estimate.estimate(plan, a.preset, profile, a.step_time, a.loader_img_s)
        gpu = profile.get("gpu_name") or "GPU"
        print(
            estimate.render(
                rows,
                f"{name} @ {a.preset} on profile {a.profile} "
                f"({gpu}, {profile.get('gpu_tflops') or '?'} TFLOP/s peak)",
            )
        )
        todo = sum(not j.done() for j in plan)
        print(
            f"{todo} of {len(plan)} jobs have no result yet; nothing was submitted "
            f"(harness run {name} --preset {a.preset} --cluster slurm --profile {a.profile})\n"
        )
    return 0


def _with_rows(spec, methods: str | None, results=None, importing: bool = False):
    """A table's columns for other rows (``--methods a,b``): your own method beside the paper's,
    or an imported checkpoint (its run name, or ``NAME=import:PATH``, imported by ``run``)."""
    if methods is None:
        return spec
    from dataclasses import replace

    from harness.checkpoints.exchange import imported_row
    from methods.registry import parse

    rows = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not rows:
        raise HarnessError(
            f"--methods {methods!r} names no method: give comma-separated names, "
            f"e.g. --methods moco_v3,moco_v3+ser (or leave it out for the table's rows)"
        )
    # Two equal rows would start two trainers writing one run folder.
    seen: dict[str, str] = {}
    for m in rows:
        key = "".join(m.split())
        if key in seen:
            raise HarnessError(
                f"--methods {methods!r} names {seen[key]!r} twice: name each row once"
            )
        seen[key] = m
    named = []
    for m in rows:
        row = imported_row(m, results or DEFAULT_RESULTS, importing)
        if row is None:
            parse(m)  # an unknown name fails here, before anything runs
        named.append(row or m)
    return replace(spec, rows=tuple(named))


def cmd_report(a) -> int:
    from harness.report import report

    written = report(
        a.tables or None,
        a.preset,
        Path(a.results),
        Path(a.out) if a.out else None,
        check_tex=a.check_tex,
        rows=lambda spec: _with_rows(spec, a.methods, a.results),
        overrides=a.overrides,
    )
    for p in written:
        print(p)
    return 0


def cmd_import(a) -> int:
    from harness.checkpoints.exchange import import_checkpoint

    run_dir, written = import_checkpoint(
        a.name, a.path, a.format, a.overrides, a.results, a.preset, a.method
    )
    if written:
        info = json.loads((run_dir / "pretrain.json").read_text())
        print(
            f"{run_dir}: {info['architecture']}; {info['loaded']} backbone tensors loaded, "
            f"{info['skipped']} entries skipped (listed in import.json)"
        )
    else:
        print(f"{run_dir}: already imported from this file (sha256 unchanged); nothing to do")
    return 0


def cmd_export(a) -> int:
    from harness.checkpoints.exchange import export_timm, resolve_run

    run_dir = resolve_run(a.run, a.results)
    out = Path(a.out) if a.out else Path(a.results) / "exports" / f"{run_dir.name}-timm.pth"
    path, kwargs = export_timm(run_dir, out)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    also = path.with_suffix(".safetensors")
    if also != path:
        print(also)
    print(f"{path}\n  load with timm.models.vision_transformer.VisionTransformer({args})")
    return 0


def cmd_audit(a) -> int:
    import torch.distributed

    from harness.instruments.audit import audit
    from harness.parallel import dist

    try:
        # Under torchrun: every rank, one global batch.
        r = audit(a.method, a.preset, a.seed, a.overrides)
        lead = dist.rank() == 0
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not lead:  # every rank holds the same averaged result; one prints it
        return 0
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        groups = list(next(iter(r["terms"].values())))
        w = {t: max(12, len(t)) + 2 for t in r["terms"]}
        lead = max(map(len, groups)) + 2
        print(f"{'group':<{lead}}" + "".join(f"{t:>{w[t]}}" for t in r["terms"]))
        for g in groups:
            print(f"{g:<{lead}}" + "".join(f"{r['terms'][t][g]:>{w[t]}.4g}" for t in r["terms"]))
    return 0


def cmd_flops(a) -> int:
    from harness import config as C
    from harness.instruments.flops import step_flops
    from methods.registry import parse

    batch = a.batch or (256 if a.preset == "paper" else None)
    batch = batch or C.resolve(a.method, a.preset, overrides=a.overrides)["train"]["batch_size"]
    base = parse(a.method)[0].name
    f = step_flops(a.method, a.preset, batch, a.overrides)
    f0 = step_flops(base, a.preset, batch, a.overrides)
    print(
        f"{a.method} @ {a.preset}, {batch} images/step: {f / 1e9:.2f} GFLOPs/image "
        f"(train step, fwd+bwd); {base}: {f0 / 1e9:.2f}; ratio {f / f0:.4f}"
    )
    return 0


def cmd_params(a) -> int:
    from harness.instruments.flops import params_millions

    m = params_millions(a.method, a.preset, a.overrides)
    print(f"{a.method} @ {a.preset}: {m:.2f}M trainable parameters (online model)")
    return 0


def cmd_config(a) -> int:
    from harness import config as C

    cfg = C.resolve(a.method, a.preset, a.seed, overrides=a.overrides)
    print(
        f"# {C.run_id(cfg)}: every key below may be overridden as key=value (except method, "
        f"base, preset, versions, addons);\n# runtime and the evaluation sections do not enter the run's hash"
    )
    print(C.to_yaml(cfg), end="")
    return 0


def cmd_methods(a) -> int:
    from harness.data.views import POLICIES, choose
    from methods.registry import ADDONS, BASES, parse

    if a.departures:
        from harness.eval.departures import EVAL_DEPARTURES
        from methods.departures import markdown, render

        if a.markdown:
            print(markdown() + "\n\n" + markdown(EVAL_DEPARTURES, "public code"))
        else:
            print("pretraining (methods/departures.py):\n" + render())
            print("\nevaluations (harness/eval/departures.py):\n" + render(EVAL_DEPARTURES))
        return 0
    parse("moco_v3")  # registers built-ins
    print("base methods (base@POLICY picks the view policy):")
    for n, c in sorted(BASES.items()):
        print(f"  {n:<16} {c.description}  [{c.augmentation} augmentation]")
    print("add-ons (compose as base+addon@modifier; every add-on takes @layerK):")
    for n, c in sorted(ADDONS.items()):
        print(
            f"  {n:<16} {c.description}  [views: {choose(c.requires)}; modifiers {c.modifier_help}]"
        )
    print("view policies:")
    for n, p in POLICIES.items():
        extra = ", ".join(p["provides"]) or "the base method's two views"
        print(f"  {n:<16} {p['label']} views in the paper's terms; provides {extra}")
    return 0


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


def cmd_data_synth(a) -> int:
    from harness.data.synthetic import generate

    print(
        generate(
            Path(a.root),
            seed=a.seed,
            n_classes=a.classes,
            size=a.size,
            train_per_class=a.train_per_class,
            val_per_class=a.val_per_class,
            force=a.force,
        )
    )
    return 0


def cmd_data_check(a) -> int:
    from harness.data.readers import READERS
    from harness.data.verify import check_dataset

    if a.name not in READERS:
        raise HarnessError(f"unknown dataset '{a.name}': choose from {', '.join(READERS)}")
    inv = check_dataset(READERS[a.name], Path(a.root), decode=not a.layout_only)
    print("\n".join(inv.lines()))
    inv.require()  # the first problem, one line on stderr, exit 2
    return 0


def cmd_data_fixtures(a) -> int:
    from harness.data.fixtures import Config, write_fixtures

    cfg = Config(
        seed=a.seed,
        n_classes=a.classes,
        size=a.size,
        jpeg_train_per_class=a.jpeg_train_per_class,
        jpeg_val_per_class=a.jpeg_val_per_class,
    )
    for name, root in write_fixtures(Path(a.out), cfg, only=a.only, force=a.force).items():
        print(f"{name}\t{root}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="a file that registers methods (@register_base / @register_addon); "
        "repeatable, also $HARNESS_PLUGINS",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a table's jobs (only those without a result)")
    r.add_argument("table")
    r.add_argument("--preset", default="tiny")
    r.add_argument("--cluster", choices=["debug", "local", "slurm"], default="local")
    r.add_argument("--profile", help="slurm/<NAME>.yaml or a path (default for slurm: local)")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--data-root", help="ImageFolder root with train/ and val/ (paper preset)")
    r.add_argument("--only", choices=["pretrain"])
    r.add_argument("--methods", help="comma-separated rows to run instead of the table's own")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--wandb", action="store_true", help="log to wandb (offline by default)")
    r.add_argument("--timeout", type=SECONDS, help="give up waiting after this many seconds")
    r.add_argument(
        "--retries",
        type=RETRIES,
        help="times a failed job is submitted again (default: the profile's, else 1)",
    )
    r.add_argument(
        "--parallel",
        type=JOBS,
        help="local cluster: jobs at once (default: cores / threads per job)",
    )
    r.set_defaults(fn=cmd_run, takes_overrides=True)

    r = sub.add_parser(
        "status", help="each job's state, progress, time left; why failed ones failed"
    )
    r.add_argument(
        "tables",
        nargs="*",
        help="tables or figures (default: every job submitted so far, from its record)",
    )
    r.add_argument("--preset", default="tiny")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--methods", help="comma-separated rows instead of the table's own")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(fn=cmd_status, takes_overrides=True)

    r = sub.add_parser("plan", help="list a table's jobs and estimate GPU-hours; submits nothing")
    r.add_argument("tables", nargs="+")
    r.add_argument("--preset", default="paper")
    r.add_argument("--profile", required=True, help="slurm/<NAME>.yaml or a path")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--methods", help="comma-separated rows instead of the table's own")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--step-time",
        type=SECONDS,
        help="measured seconds per pretraining step of the "
        "global batch on this cluster (else FLOPs)",
    )
    r.add_argument(
        "--utilization",
        type=FRACTION,
        help="fraction of peak FLOP/s reached (default: the profile's, else 0.4)",
    )
    r.add_argument(
        "--loader-img-s",
        type=RATE,
        help="source images/s one loader worker delivers (harness bench loader): flags jobs "
        "the profile's workers cannot feed and prices them at the loader's rate",
    )
    r.set_defaults(fn=cmd_plan, takes_overrides=True)

    r = sub.add_parser("report", help="render tables from the results present")
    r.add_argument("tables", nargs="*")
    r.add_argument("--preset", help="only this preset (default: every preset with results)")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--out", help="output directory (default: RESULTS/report/PRESET)")
    r.add_argument("--check-tex", action="store_true", help="compile each .tex with pdflatex")
    r.add_argument("--methods", help="comma-separated rows instead of the table's own")
    r.set_defaults(fn=cmd_report, takes_overrides=True)

    for name, fn, default_preset, help_ in (
        ("audit", cmd_audit, "tiny", "per-term gradient norms on each parameter group"),
        ("flops", cmd_flops, "paper", "training FLOPs per image and ratio to the base method"),
        ("params", cmd_params, "paper", "trainable parameters of the online model"),
    ):
        r = sub.add_parser(name, help=help_)
        r.add_argument("method")
        r.add_argument("--preset", default=default_preset)
        if name == "audit":
            r.add_argument("--json", action="store_true")
            r.add_argument("--seed", type=int, default=0)
        if name == "flops":
            r.add_argument("--batch", type=int, help="images per GPU (paper: 256)")
        r.set_defaults(fn=fn, takes_overrides=True)

    r = sub.add_parser(
        "config",
        help="print a method's resolved config as YAML: every key a key=value override may set",
    )
    r.add_argument("method")
    r.add_argument("--preset", default="tiny")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(fn=cmd_config, takes_overrides=True)

    r = sub.add_parser("methods", help="list registered methods and add-ons")
    r.add_argument(
        "--departures",
        action="store_true",
        help="every place the harness computes other than the public code (SER's for the methods "
        "and the linear probe; the evaluations' own where SER has none), the switch, and its "
        "effect measured now on fixed tensors",
    )
    r.add_argument(
        "--markdown", action="store_true", help="with --departures: README.md's two tables"
    )
    r.set_defaults(fn=cmd_methods)

    for r in sub.choices.values():
        if r.get_default("takes_overrides"):
            r.usage = f"{r.format_usage().split(': ', 1)[1].rstrip()} [KEY=VALUE ...]"
            r.epilog = (
                "KEY=VALUE arguments override the resolved config (train.batch_size=1024 "
                "linear.epochs=90 runtime.num_workers=10); harness config METHOD lists every key"
            )

    r = sub.add_parser(
        "import",
        help="turn a checkpoint trained elsewhere (DINO, MoCo-v3, timm, SER, harness) into a "
        "run every evaluation and table reads",
    )
    r.add_argument("name", help="the run's name: RESULTS/runs/NAME, and the table row's name")
    r.add_argument(
        "path",
        help="the checkpoint file, read with torch.load(weights_only=True) (or .safetensors): "
        "tensors, plain data, numpy arrays, argparse.Namespace and torch.nn layers only; a "
        "file holding anything else is refused, as unpickling it could run code",
    )
    r.add_argument("--format", required=True, choices=["dino", "moco_v3", "timm", "ser", "harness"])
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--preset", default="paper", help="the preset of the stored config")
    r.add_argument("--method", help="base method whose recipes the run takes (default: by format)")
    r.set_defaults(fn=cmd_import, takes_overrides=True)  # KEY=VALUE: the import's options
    r.usage = f"{r.format_usage().split(': ', 1)[1].rstrip()} [KEY=VALUE ...]"
    r.epilog = (
        "KEY=VALUE: model.heads=12-style architecture the tensors cannot tell; "
        "branch=teacher|student (dino, ser); encoder=base|momentum (moco_v3); published=KEY "
        "(a checkpoint of tables/reference/published.csv, else matched by file name)"
    )

    r = sub.add_parser(
        "export",
        help="write a run's evaluated backbone as a timm state dict (.pth and .safetensors); "
        "its checkpoint.pt is read with weights_only=True",
    )
    r.add_argument("run", help="a run directory, or a run id under RESULTS/runs")
    r.add_argument("--format", required=True, choices=["timm"])
    r.add_argument(
        "--out",
        help="output file (default: RESULTS/exports/RUN-timm.pth), the .safetensors beside it; "
        "FILE.safetensors: that file only",
    )
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.set_defaults(fn=cmd_export)

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
    s.add_argument("--results", default=DEFAULT_RESULTS, help="JSON goes to RESULTS/bench/")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_bench_step, takes_overrides=True)
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
    s.add_argument("--results", default=DEFAULT_RESULTS, help="JSON goes to RESULTS/bench/")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_bench_loader, takes_overrides=True)

    d = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="write the synthetic ImageFolder set")
    s.add_argument("--root", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--train-per-class", type=int, default=200)
    s.add_argument("--val-per-class", type=int, default=50)
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_data_synth)
    s = d.add_parser(
        "check", help="validate an evaluation set's layout: what is there, what is missing"
    )
    s.add_argument(
        "name",
        help="imagenet, imagenet_v2, imagenet_sketch, imagenet_r, imagenet_c, imagenet_p "
        "or 3diebench",
    )
    s.add_argument("--root", required=True)
    s.add_argument(
        "--layout-only",
        action="store_true",
        help="check folders and counts only; by default every image (ImageNet-P: every "
        "video) is also decoded once, verdicts cached by path, size and mtime",
    )
    s.set_defaults(fn=cmd_data_check)
    s = d.add_parser("fixtures", help="write small trees in every evaluation set's real layout")
    s.add_argument("--out", required=True)
    s.add_argument("--only", action="append", help="one tree (repeatable; default: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--size", type=int, default=32)
    s.add_argument(
        "--jpeg-train-per-class",
        type=int,
        default=4,
        help="imagenet_jpeg: photo-sized JPEGs per class in train/",
    )
    s.add_argument(
        "--jpeg-val-per-class", type=int, default=2, help="imagenet_jpeg: per class in val/"
    )
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_data_fixtures)
    return p


def _number(kind, low: float, what: str, high: float | None = None, strict: bool = True):
    """An argparse type: ``kind`` above ``low`` (or at it, ``strict=False``), at most ``high``."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not (v > low if strict else v >= low) or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"{text}: {what}")
        return v

    return parse


SECONDS = _number(float, 0, "give a number of seconds > 0 (or leave the option out)")
JOBS = _number(int, 0, "give at least 1 job at once")
RETRIES = _number(int, 0, "give 0 or more retries", strict=False)
RATE = _number(float, 0, "give a rate > 0")
FRACTION = _number(float, 0, "give a fraction of peak in (0, 1], e.g. 0.4 for 40 %", high=1.0)


def parse_args(argv=None) -> argparse.Namespace:
    """Options and positionals as argparse reads them, plus ``overrides``: the ``key=value``
    arguments of the commands that resolve a config, wherever they stand after the command."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    if getattr(args, "takes_overrides", False):
        if isinstance(getattr(args, "tables", None), list):  # TABLE… and key=value… interleave
            extra = [t for t in args.tables if "=" in t] + extra
            args.tables = [t for t in args.tables if "=" not in t]
            if not args.tables and args.cmd == "plan":
                p.error("plan: the following arguments are required: tables")
        # Anything else not an option is a malformed override: resolve names it in one line.
        args.overrides = [x for x in extra if not x.startswith("-")]
        extra = [x for x in extra if x.startswith("-")]
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# Errors of the storage, not of the harness: one line naming the path, like bad input.
_STORAGE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _one_line(e: HarnessError) -> str:
    """The message; for an error raised in a DataLoader worker, which torch re-raises with the
    worker's traceback in the message, only the original message (its last line)."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if last.startswith("harness.errors.HarnessError") else last
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.plugin:
            from methods.registry import PLUGIN_ENV, load_plugins

            load_plugins(args.plugin)
            # Jobs in subprocesses and on Slurm inherit the environment, so they see it too.
            paths = [str(Path(p).resolve()) for p in args.plugin]
            os.environ[PLUGIN_ENV] = os.pathsep.join(
                paths + [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
            )
        if getattr(args, "results", None) is not None:
            from harness.config.paths import results_folder

            given = argv if argv is not None else sys.argv
            from_env = args.results == os.environ.get("HARNESS_RESULTS") and not any(
                str(x).split("=")[0] == "--results" for x in given
            )
            results_folder(args.results, "HARNESS_RESULTS" if from_env else "--results")
        return args.fn(args)
    except HarnessError as e:
        print(f"harness: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _STORAGE:
            raise
        # A read-only, full or foreign folder: nothing half-written stays (writes are atomic).
        where = f" {e.filename}" if e.filename else ""
        print(
            f"harness: error: cannot write{where}: {e.strerror}: make the folder writable "
            "(or free space), or pass --results DIR",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "harness: interrupted; finished results are kept — re-run the same command to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
