"""Results → rendered tables: read the JSONs a table's jobs wrote, hand them to ``report``."""

from __future__ import annotations

import hashlib
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

import tables
from harness.config import presets
from harness.errors import HarnessError
from harness.report.tables import render_table
from harness.run import jobs


def _warn(message: str, job=None) -> None:
    print(f"harness: {message}", file=sys.stderr)


def table_results(plan: list, set_aside: dict | None = None) -> pd.DataFrame:
    """One row per (method, dataset, metric) of the results a table's planned jobs wrote.
    A result file that is no result (unreadable, metrics missing or out of range) is named in
    one warning and left out; with ``set_aside``, its job's (method, dataset) → why goes there
    so the table can footnote the gap."""
    rows = []

    def warn(message: str, job=None) -> None:
        _warn(message)
        if set_aside is not None and job is not None:
            why = message.rsplit(": left out", 1)[0].replace(job.result, Path(job.result).name)
            set_aside[job.cfg["method"], job.dataset] = why

    for rec in jobs.load_results(plan, warn=warn):
        for metric, value in rec["metrics"].items():
            # "fog/top1" from the imagenet_c job is column (imagenet_c/fog, top1).
            sub, _, name = metric.rpartition("/")
            rows.append(
                {
                    "method": rec["method"],
                    "dataset": f"{rec['dataset']}/{sub}" if sub else rec["dataset"],
                    "metric": name,
                    "value": value,
                }
            )
    return pd.DataFrame(rows, columns=["method", "dataset", "metric", "value"])


def _with_published(spec, plan: list, ctx: dict) -> pd.DataFrame | None:
    """The paper's numbers plus, for rows that are imported released checkpoints, their
    published numbers (tables/reference/published.csv), so the report shows the delta to
    those as it does to the paper's. None when no row is such an import."""
    from harness.report.tables import KEY, load_reference
    from harness.tools.checkpoints import published_cells

    published = {}
    for j in plan:
        imp = j.cfg.get("imported") or {}
        if imp.get("published"):
            published[imp["name"]] = imp["published"]
    if not published:
        return None
    cells = [c for name, key in published.items() for c in published_cells(name, key)]
    ctx["published"] = published
    extra = pd.DataFrame(cells, columns=KEY + ["value"])
    return pd.concat([load_reference(spec), extra], ignore_index=True)


def report(
    names,
    preset,
    results_dir: Path,
    out: Path | None,
    check_tex=False,
    rows=lambda spec: spec,
    overrides=(),
) -> list[Path]:
    """Render every table and figure that has results. With ``overrides`` the rows are the
    runs made with them, reported under ``report/<preset>-<hash of the overrides>/``."""
    if check_tex:  # before anything is rendered: a missing compiler is known now
        from harness.report.tables import require_pdflatex

        require_pdflatex()
    written = []
    changed = [o for o in overrides if not o.strip().startswith("runtime.")]
    tag = "-" + hashlib.sha1(" ".join(changed).encode()).hexdigest()[:8] if changed else ""
    for name in names or tables.available():
        spec = rows(tables.load(name))
        for p in [preset] if preset else list(presets.PRESETS):
            plan = jobs.plan(spec, p, results_dir, overrides=overrides)
            where = out or results_dir / "report" / (p + tag)
            ctx = {
                "preset": p,
                "scale": next((j.scale for j in plan), presets.get(p)["scale"]),
                "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            }
            if isinstance(spec, tables.FigureSpec):
                from harness.report.figures import render_figure

                records = jobs.load_results(plan, warn=_warn)
                if records:
                    written += render_figure(spec, records, where, ctx)
                continue
            left_out: dict = {}
            df = table_results(plan, left_out)
            if df.empty and not left_out:
                continue
            # Every column of a left-out job's dataset is missing for its reason.
            ctx["set_aside"] = {
                (m, c.dataset, c.metric): why
                for (m, d), why in left_out.items()
                for c in spec.columns
                if c.dataset == d or c.dataset.startswith(d + "/")
            }
            paths = render_table(spec, df, where, ctx, reference=_with_published(spec, plan, ctx))
            if check_tex:
                from harness.report.tables import compile_check

                compile_check(paths["tex"])
            written += list(paths.values())
    if not written:
        which = f"at preset {preset}" if preset else "at any preset"
        raise HarnessError(
            f"no results for {', '.join(names or tables.available())} {which} in "
            f"{results_dir}: run `harness run TABLE --preset PRESET` first"
        )
    return written
