"""Render a table spec's measured results as LaTeX, CSV and Markdown.

Measured numbers and the paper's numbers are kept in separate blocks on purpose: a
small-preset run is not a reproduction of the paper's scale, and a reader skimming the
measured table must never mistake a copied paper value for something this harness ran.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.eval.metrics import metrics_problem
from harness.io import shareable
from harness.report.latex import escape_latex, latex_text
from tables import DATASET_LABELS, EVALUATION_LABELS, Column, TableSpec

KEY = ["method", "dataset", "metric"]
MISSING = "--"
SET_ASIDE = "†"  # marks a cell whose result was refused; the table's note says why
REFERENCE_TITLE = "Paper reference (not measured here)"


def _protocol(context: dict, esc) -> str:
    """The caption's protocol sentence (``collect.table_protocol``), or nothing."""
    return f" Protocol: {esc(context['protocol'])}." if context.get("protocol") else ""


def _plain(latex: str) -> str:
    """Spec captions are written in LaTeX; Markdown wants the bare characters."""
    return re.sub(r"\\([%&_#$])", r"\1", latex)


def _cell_map(
    spec: TableSpec, frame: pd.DataFrame | None, what: str, refused: dict | None = None
) -> dict:
    """(method, dataset, metric) -> float for the spec's cells; NaN values count as missing.
    With ``refused``, a value that is no measurement (inf, not a number, outside its metric's
    range) is missing too and its reason goes into ``refused``: it is never printed or bolded."""
    if frame is None or frame.empty:
        return {}
    absent = [c for c in KEY + ["value"] if c not in frame.columns]
    if absent:
        raise HarnessError(
            f"{what} for {spec.name} lacks columns {absent}; expected {KEY + ['value']}"
        )
    wanted = {(m, c.dataset, c.metric) for m in spec.rows for c in spec.columns}
    cells: dict = {}
    for rec in frame[KEY + ["value"]].itertuples(index=False):
        key = (rec.method, rec.dataset, rec.metric)
        if key not in wanted:
            continue
        if refused is not None and (why := metrics_problem({rec.metric: rec.value})):
            refused[key] = why
            continue
        if pd.isna(rec.value):
            continue
        if key in cells:
            raise HarnessError(
                f"{what} for {spec.name} has more than one value for {key}; keep one per cell"
            )
        cells[key] = float(rec.value)
    return cells


def load_reference(spec: TableSpec) -> pd.DataFrame:
    """The paper's numbers for the spec's rows and columns (empty frame if it has none)."""
    path = spec.reference_path()
    if path is None:
        return pd.DataFrame(columns=KEY + ["value"])
    if not path.exists():
        raise HarnessError(
            f"{spec.name} names reference {path}, which does not exist; add it or drop `reference`"
        )
    ref = pd.read_csv(path)
    cells = _cell_map(spec, ref, f"reference {path.name}")
    return pd.DataFrame([(*k, v) for k, v in cells.items()], columns=KEY + ["value"])


def _sub_label(dataset: str) -> str:
    """ "imagenet_c/gaussian_noise" → "Gaussian noise"; "…/avg" → "Average"."""
    sub = dataset.rpartition("/")[2]
    if sub == "avg":
        return "Average"
    return f"Layer {sub[5:]}" if sub.startswith("layer") else sub.replace("_", " ").capitalize()


def _groups(spec: TableSpec) -> list[tuple[str, list[Column]]]:
    """Consecutive columns sharing (evaluation, dataset) form one spanning header."""
    several_evals = (
        len(
            {
                c.evaluation
                for c in spec.columns
                if EVALUATION_LABELS.get(c.evaluation, c.evaluation)
            }
        )
        > 1
    )
    groups: list[tuple[tuple, list[Column]]] = []
    for col in spec.columns:
        if groups and groups[-1][0] == (col.evaluation, col.dataset):
            groups[-1][1].append(col)
        else:
            groups.append(((col.evaluation, col.dataset), [col]))
    out = []
    for (evaluation, dataset), cols in groups:
        label = DATASET_LABELS.get(dataset) or _sub_label(dataset)
        out.append(
            (
                f"{label}, {EVALUATION_LABELS.get(evaluation, evaluation)}"
                if several_evals and EVALUATION_LABELS.get(evaluation, evaluation)
                else label,
                cols,
            )
        )
    return out


def _best(spec: TableSpec, cells: dict) -> set:
    """Keys of the best cell(s) per column, judged on the printed 2-decimal value so that
    numbers that look equal are bolded alike."""
    best = set()
    pick = max if spec.higher_is_better else min
    for col in spec.columns:
        if not col.ranked:
            continue
        shown = {
            (m, col.dataset, col.metric): round(cells[(m, col.dataset, col.metric)], 2)
            for m in spec.rows
            if (m, col.dataset, col.metric) in cells
        }
        if shown:
            top = pick(shown.values())
            best |= {k for k, v in shown.items() if v == top}
    return best


def _header_tex(spec: TableSpec) -> list[str]:
    groups = _groups(spec)
    spans, rules, start = [], [], 2
    for label, cols in groups:
        spans.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{escape_latex(label)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
        start += len(cols)
    metrics = [escape_latex(c.label) for c in spec.columns]
    return [
        r"\toprule",
        " & ".join([""] + spans) + r" \\",
        " ".join(rules),
        " & ".join(["Method"] + metrics) + r" \\",
        r"\midrule",
    ]


def _table_tex(spec: TableSpec, caption: str, label: str, body: list[str]) -> list[str]:
    return [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{l{'c' * len(spec.columns)}}}",
        *_header_tex(spec),
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]


def _delta(measured: float | None, paper: float | None) -> float | None:
    return None if measured is None or paper is None else measured - paper


def _fmt(value: float | None, signed: bool = False, decimals: int = 2) -> str:
    if value is None or math.isnan(value):
        return MISSING
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _tex(spec, cells, ref, context) -> str:
    best = _best(spec, cells)
    measured = []
    for m in spec.rows:
        row = [escape_latex(spec.row_label(m))]
        for c in spec.columns:
            k = (m, c.dataset, c.metric)
            txt = _fmt(cells.get(k), decimals=spec.decimals)
            if k in context.get("set_aside", {}):
                txt += r"$^\dagger$"
            if k in (context.get("notes") or {}):
                txt += r"$^\ddagger$"
            row.append(rf"\textbf{{{txt}}}" if k in best else txt)
        measured.append(" & ".join(row) + r" \\")
    caption = (
        f"{spec.caption} Measured by this harness at preset \\texttt{{{escape_latex(context['preset'])}}} "
        f"({escape_latex(context['scale'])})." + _protocol(context, latex_text)
    )
    lines = [
        "% Generated by harness.report.tables; edits are overwritten.",
        f"% preset: {context['preset']}; generated: {context.get('generated', 'n/a')}",
        *_table_tex(spec, caption, f"tab:{spec.name}", measured),
    ]
    if notes := _set_aside_notes(spec, context):
        lines.insert(-1, r"\par\footnotesize $^\dagger$ " + escape_latex(notes))
    for note in (context.get("notes") or {}).values():
        lines.insert(-1, r"\par\footnotesize $^\ddagger$ " + latex_text(note) + ".")
    if ref:
        rows = []
        for m in spec.rows:
            row = [escape_latex(spec.row_label(m))]
            for c in spec.columns:
                k = (m, c.dataset, c.metric)
                if k not in ref:
                    row.append(MISSING)
                    continue
                d = _delta(cells.get(k), ref[k])
                # Math mode gives a real minus sign; "--" stays an en dash outside it.
                row.append(
                    f"{_fmt(ref[k], decimals=spec.decimals)} {{\\scriptsize "
                    f"({MISSING if d is None else f'${_fmt(d, True, spec.decimals)}$'})}}"
                )
            rows.append(" & ".join(row) + r" \\")
        ref_caption = (
            f"{REFERENCE_TITLE}: the paper's values for {escape_latex(spec.name)}, "
            r"with $\Delta$ = measured $-$ paper in parentheses."
            + _published_note(context, escape_latex)
        )
        lines += ["", *_table_tex(spec, ref_caption, f"tab:{spec.name}-reference", rows)]
    return "\n".join(lines) + "\n"


def _set_aside_notes(spec: TableSpec, context: dict) -> str:
    """One sentence naming each refused cell and why: a reader sees the gap is no result."""
    refused = context.get("set_aside") or {}
    if not refused:
        return ""
    labels = {(c.dataset, c.metric): f"{c.dataset} {c.label}" for c in spec.columns}
    items = [
        f"{spec.row_label(m)}, {labels.get((d, met), f'{d} {met}')}: {why}"
        for (m, d, met), why in sorted(refused.items())
    ]
    return "not computed or set aside (`harness run` recomputes it): " + "; ".join(items) + "."


def _published_note(context: dict, esc) -> str:
    """For rows that are imported released checkpoints: their reference is the published
    figure of that checkpoint (tables/reference/published.csv), not the paper's."""
    published = context.get("published") or {}
    if not published:
        return ""
    rows = ", ".join(f"{esc(name)}: {esc(key)}" for name, key in sorted(published.items()))
    return f" Imported checkpoints are compared with their published figures ({rows})."


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda s: str(s).replace("|", r"\|")  # noqa: E731 - a pipe would split the cell
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]


def _md(spec, cells, ref, context) -> str:
    best = _best(spec, cells)
    header = ["Method"] + [f"{g} {c.label}" for g, cols in _groups(spec) for c in cols]
    measured, reference = [], []
    for m in spec.rows:
        keys = [(m, c.dataset, c.metric) for c in spec.columns]
        measured.append(
            [spec.row_label(m)]
            + [
                f"**{_fmt(cells.get(k), decimals=spec.decimals)}**"
                if k in best
                else _fmt(cells.get(k), decimals=spec.decimals)
                + (SET_ASIDE if k in context.get("set_aside", {}) else "")
                + ("‡" if k in (context.get("notes") or {}) else "")
                for k in keys
            ]
        )
        reference.append(
            [spec.row_label(m)]
            + [
                MISSING
                if k not in ref
                else f"{_fmt(ref[k], decimals=spec.decimals)} "
                f"({_fmt(_delta(cells.get(k), ref[k]), True, spec.decimals)})"
                for k in keys
            ]
        )
    lines = [
        f"# {spec.name}: {_plain(spec.caption)}",
        "",
        f"Measured by this harness at preset `{context['preset']}` ({context['scale']})."
        + _protocol(context, str)
        + (f" Generated {context['generated']}." if context.get("generated") else ""),
        "",
        *_md_table(header, measured),
        "",
    ]
    if notes := _set_aside_notes(spec, context):
        lines += [f"{SET_ASIDE} {notes}", ""]
    for note in (context.get("notes") or {}).values():
        lines += [f"‡ {note}.", ""]
    if ref:
        lines += [
            f"## {REFERENCE_TITLE}",
            "",
            "Paper value (Δ = measured − paper)." + _published_note(context, str),
            "",
            *_md_table(header, reference),
            "",
        ]
    else:
        lines += ["No paper reference for this table.", ""]
    return "\n".join(lines)


def _csv(spec, cells, ref, context) -> pd.DataFrame:
    recs = []
    for m in spec.rows:
        for c in spec.columns:
            k = (m, c.dataset, c.metric)
            d = _delta(cells.get(k), ref.get(k))
            recs.append(
                {
                    "method": m,
                    "row_label": spec.row_label(m),
                    "dataset": c.dataset,
                    "metric": c.metric,
                    "value": cells.get(k),
                    "paper": ref.get(k),
                    # Rounded only to drop float noise such as 0.7200000000000003.
                    "delta": None if d is None else round(d, 6),
                    "preset": context["preset"],
                }
            )
    return pd.DataFrame(
        recs,
        columns=["method", "row_label", "dataset", "metric", "value", "paper", "delta", "preset"],
    )


def _write_atomic(path: Path, text: str) -> None:
    """Readers (and a concurrent `harness report`) see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_table(
    spec: TableSpec,
    results: pd.DataFrame,
    out_dir: Path,
    context: dict,
    reference: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write <name>.tex/.csv/.md into out_dir. `reference=None` loads the spec's paper
    numbers; pass an empty frame to leave the reference block out."""
    for key in ("preset", "scale"):
        if not context.get(key):
            raise HarnessError(f"report context needs '{key}' so the caption states what was run")
    if reference is None:
        reference = load_reference(spec)
    refused: dict = {}
    cells = _cell_map(spec, results, "results", refused)
    context = {**context, "set_aside": {**refused, **context.get("set_aside", {})}}
    ref = _cell_map(spec, reference, "reference")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{spec.name}.{ext}" for ext in ("tex", "csv", "md")}
    _write_atomic(paths["tex"], _tex(spec, cells, ref, context))
    _write_atomic(paths["csv"], _csv(spec, cells, ref, context).to_csv(index=False))
    _write_atomic(paths["md"], _md(spec, cells, ref, context))
    return paths
