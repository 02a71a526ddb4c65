"""Results → the paper's tables and figures: collect the result JSONs, render LaTeX/CSV/Markdown
tables and PNG/PDF figures."""

from harness.report.collect import report, table_results

__all__ = ["report", "table_results"]
