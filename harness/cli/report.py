"""``harness report``: render tables from the results present."""

from __future__ import annotations

from pathlib import Path

from harness.cli.args import DEFAULT_RESULTS, takes_overrides, with_rows


def cmd_report(a) -> int:
    from harness.report import report
    from harness.run.sources import prepare_rows

    written = report(
        a.tables or None,
        a.preset,
        Path(a.results),
        Path(a.out) if a.out else None,
        check_tex=a.check_tex,
        rows=lambda spec: prepare_rows(with_rows(spec, a.methods), a.results),
        overrides=a.overrides,
    )
    for p in written:
        print(p)
    return 0


def add(sub) -> None:
    r = sub.add_parser("report", help="render tables from the results present")
    r.add_argument("tables", nargs="*")
    r.add_argument("--preset", help="only this preset (default: every preset with results)")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--out", help="output directory (default: RESULTS/report/PRESET)")
    r.add_argument("--check-tex", action="store_true", help="compile each .tex with pdflatex")
    r.add_argument("--methods", help="comma-separated rows instead of the table's own")
    takes_overrides(r, cmd_report)
