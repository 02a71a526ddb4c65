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
from harness.run.planning import planned_results
from harness.run.results import load_results, read_result


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

    for rec in load_results(plan, warn=warn):
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


def table_protocol(spec, plan: list) -> str:
    """The protocol of every evaluation the table's results came from, in one line, from the
    config sections each result records (``harness.eval.protocols``). Rows whose protocols
    differ in anything but their base method's learning rates are refused: a table compares
    its rows, and rows measured two ways do not compare."""
    from harness.eval.protocols import BASE_LABELS, PER_ROW, describe

    found: dict[tuple[str, str], dict[str, list]] = {}
    bases: dict[str, str | None] = {}  # method -> its base method
    for j in plan:
        if j.kind != "eval" or not j.done():
            continue
        rec, _ = read_result(j)
        sections = ((rec or {}).get("eval_spec") or {}).get("sections")
        if not isinstance(sections, dict):
            continue
        try:
            fields = describe(j.evaluation, j.dataset, sections, j.cfg.get("base"))
        except (KeyError, TypeError):  # a result of an older harness: sections it lacks
            fields = [("recorded", "a protocol this harness no longer describes")]
        if fields:
            found.setdefault((j.evaluation, j.dataset), {})[j.cfg["method"]] = fields
            bases[j.cfg["method"]] = j.cfg.get("base")
    parts: dict[tuple[str, str], list[str]] = {}
    for (evaluation, dataset), rows in found.items():
        shared = {m: [(k, t) for k, t in f if k not in PER_ROW] for m, f in rows.items()}
        first, *others = shared
        for m in others:
            if shared[m] != shared[first]:
                a = dict(shared[first])
                k = next(k for k, t in shared[m] if a.get(k) != t)
                raise HarnessError(
                    f"{spec.name} mixes protocols in its {evaluation} {dataset} columns: "
                    f"{first} has '{a.get(k)}', {m} has '{dict(shared[m])[k]}'; "
                    f"compute every row with one protocol, or report them in separate tables"
                )
        texts = []
        for k, t in rows[first]:
            if k not in PER_ROW:
                texts.append(t)
                continue
            by_text: dict[str, list[str]] = {}
            for m, f in rows.items():
                by_text.setdefault(dict(f)[k], []).append(BASE_LABELS.get(bases[m], m))
            if len(by_text) == 1:
                texts.append(t)
            else:
                texts.append(
                    ", ".join(
                        f"{tx} ({', '.join(dict.fromkeys(who))})" for tx, who in by_text.items()
                    )
                )
        what = tables.EVALUATION_LABELS.get(evaluation, evaluation)
        parts.setdefault((what, ", ".join(texts)), []).append(
            tables.DATASET_LABELS.get(dataset, dataset)
        )
    return "; ".join(
        f"{what} on {', '.join(where)}: {text}" for (what, text), where in parts.items()
    )


def params_notes(spec, results: pd.DataFrame) -> dict:
    """Footnotes for a parameter column: each row whose count at the paper's shapes
    (``paper_params_m``, harness/eval/params.py) differs from the paper's printed one, by
    the cell it marks."""
    from harness.report.tables import load_reference

    if not any(c.metric == "params_m" for c in spec.columns) or results.empty:
        return {}
    ref = load_reference(spec)
    paper = {r.method: r.value for r in ref.itertuples() if r.metric == "params_m" and r.dataset}
    notes = {}
    for r in results.itertuples():
        if r.metric != "paper_params_m" or r.method not in paper:
            continue
        if round(float(r.value), 1) != round(float(paper[r.method]), 1):
            notes[r.method, "model", "params_m"] = (
                f"{spec.row_label(r.method)}: {r.value:.2f}M at the paper's ViT-S/16 shapes as "
                f"built here; the paper prints {paper[r.method]:g}M"
            )
    return notes


def _with_published(spec, plan: list, ctx: dict) -> pd.DataFrame | None:
    """The paper's numbers plus, for rows that are imported released checkpoints, their
    published numbers (tables/reference/published.csv), so the report shows the delta to
    those as it does to the paper's. None when no row is such an import."""
    from harness.checkpoints.exchange import published_cells
    from harness.report.tables import KEY, load_reference

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
        from harness.report.latex import require_pdflatex

        require_pdflatex()
    written = []
    changed = [o for o in overrides if not o.strip().startswith("runtime.")]
    tag = "-" + hashlib.sha1(" ".join(changed).encode()).hexdigest()[:8] if changed else ""
    for name in names or tables.available():
        spec = rows(tables.load(name))
        for p in [preset] if preset else list(presets.PRESETS):
            plan = planned_results(spec, p, results_dir, overrides)
            where = out or results_dir / "report" / (p + tag)
            ctx = {
                "preset": p,
                "scale": next((j.scale for j in plan), presets.get(p)["scale"]),
                "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "protocol": table_protocol(spec, plan),
            }
            if isinstance(spec, tables.FigureSpec):
                from harness.report.figures import render_figure

                records = load_results(plan, warn=_warn)
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
            ctx["notes"] = params_notes(spec, df)
            paths = render_table(spec, df, where, ctx, reference=_with_published(spec, plan, ctx))
            if check_tex:
                from harness.report.latex import compile_check

                compile_check(paths["tex"])
            written += list(paths.values())
    if not written:
        which = f"at preset {preset}" if preset else "at any preset"
        raise HarnessError(
            f"no results for {', '.join(names or tables.available())} {which} in "
            f"{results_dir}: run `harness run TABLE --preset PRESET` first"
        )
    return written
