"""``harness run``, ``status`` and ``plan``: a table's jobs run, inspected, or priced."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cli.args import (
    DEFAULT_RESULTS,
    FRACTION,
    JOBS,
    RATE,
    RETRIES,
    SECONDS,
    add_table_options,
    takes_overrides,
    with_rows,
)
from harness.errors import HarnessError


def cmd_run(a) -> int:
    import tables
    from harness.run import launch
    from harness.run.execute import default_runtime
    from harness.run.planning import plan
    from harness.run.sources import prepare_rows

    spec = prepare_rows(with_rows(tables.load(a.table), a.methods), a.results, importing=True)
    if a.data_root:
        from harness import config as C
        from harness.config import presets

        C.refuse_unused_data_root(a.preset, presets.get(a.preset)["data"]["dataset"], a.data_root)
    profile = None
    if a.cluster == "slurm" or a.profile:
        from harness.run.profiles import load_profile

        profile = load_profile(a.profile or "local")
    rt = default_runtime(
        a.cluster,
        a.results,
        a.data_root,
        wandb=a.wandb or None,
        threads=(profile or {}).get("cpus_per_task"),
    )
    rt = _runtime(rt, profile if a.cluster == "slurm" else None, a)
    jobs = plan(spec, a.preset, a.results, a.seed, rt, only=a.only, overrides=a.overrides)
    summary = launch.run(
        jobs,
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
    from harness.run.planning import plan
    from harness.run.sources import prepare_rows

    out = []
    for name in a.tables or tables.available():
        spec = prepare_rows(with_rows(tables.load(name), a.methods), a.results)
        out.append((name, plan(spec, a.preset, a.results, a.seed, overrides=a.overrides)))
    return out


def cmd_status(a) -> int:
    from harness.run import status

    if a.tables:
        for name, jobs in _planned(a):
            rows = [status.job_status(Path(a.results), j) for j in jobs]
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
    from harness.run import estimate
    from harness.run.profiles import load_profile

    profile = load_profile(a.profile)
    if a.utilization is not None:
        profile["utilization"] = a.utilization
    for name, jobs in _planned(a):
        rows = estimate.estimate(jobs, a.preset, profile, a.step_time, a.loader_img_s)
        gpu = profile.get("gpu_name") or "GPU"
        print(
            estimate.render(
                rows,
                f"{name} @ {a.preset} on profile {a.profile} "
                f"({gpu}, {profile.get('gpu_tflops') or '?'} TFLOP/s peak)",
            )
        )
        todo = sum(not j.done() for j in jobs)
        print(
            f"{todo} of {len(jobs)} jobs have no result yet; nothing was submitted "
            f"(harness run {name} --preset {a.preset} --cluster slurm --profile {a.profile})\n"
        )
    return 0


def add(sub) -> None:
    from harness.run.launch import CLUSTERS

    r = sub.add_parser("run", help="run a table's jobs (only those without a result)")
    r.add_argument("table")
    r.add_argument("--preset", default="tiny")
    r.add_argument("--cluster", choices=CLUSTERS, default="local")
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
    takes_overrides(r, cmd_run)

    r = sub.add_parser(
        "status", help="each job's state, progress, time left; why failed ones failed"
    )
    r.add_argument(
        "tables",
        nargs="*",
        help="tables or figures (default: every job submitted so far, from its record)",
    )
    add_table_options(r, "tiny")
    takes_overrides(r, cmd_status)

    r = sub.add_parser("plan", help="list a table's jobs and estimate GPU-hours; submits nothing")
    r.add_argument("tables", nargs="+")
    r.add_argument("--profile", required=True, help="slurm/<NAME>.yaml or a path")
    add_table_options(r, "paper")
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
    takes_overrides(r, cmd_plan)
