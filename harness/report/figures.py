"""Figures as PNG and PDF (matplotlib): curves of table columns against a row parameter
(Figure 3) and t-SNE scatters (Figures 4 and 5), from the records a figure's jobs wrote."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.io import shareable  # noqa: E402
from tables import METRIC_LABELS, FigureSpec  # noqa: E402


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=f".{ext}", dir=out_dir)
        os.close(fd)
        fig.savefig(tmp, dpi=200, bbox_inches="tight")
        shareable(tmp)
        os.replace(tmp, path)
        paths.append(path)
    plt.close(fig)
    return paths


def _value(records: list[dict], method: str, dataset: str, metric: str):
    for r in records:
        if r["method"] == method and r["dataset"] == dataset and metric in r["metrics"]:
            return r["metrics"][metric]
    return None


def _curves(spec: FigureSpec, records: list[dict], fig) -> None:
    axes = fig.subplots(1, len(spec.panels), squeeze=False)[0]
    for ax, (title, xlabel, xs) in zip(axes, spec.panels):
        for col in spec.columns:
            pts = sorted((x, _value(records, m, col.dataset, col.metric)) for m, x in xs.items())
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=METRIC_LABELS.get(col.metric, col.metric))
        ax.set(title=title, xlabel=xlabel, ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()


def _tsne(spec: FigureSpec, records: list[dict], fig) -> None:
    axes = fig.subplots(1, len(spec.rows), squeeze=False)[0]
    for ax, method in zip(axes, spec.rows):
        rec = next((r for r in records if r["method"] == method and "points" in r["metrics"]), None)
        ax.set(title=spec.row_label(method), xticks=[], yticks=[])
        if rec is None:
            ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
            continue
        x, y = zip(*rec["metrics"]["points"])
        labels = rec["metrics"]["labels"]
        ax.scatter(x, y, c=labels, cmap="tab20", s=8)
        # the caption is the paper's (20 classes); a small preset has fewer
        ax.set_title(
            f"{spec.row_label(method)}\n{len(set(labels))} classes, {len(labels)} points",
            fontsize=9,
        )


def render_figure(
    spec: FigureSpec, records: list[dict], out_dir: Path, context: dict
) -> list[Path]:
    if spec.kind not in ("curve", "tsne"):
        raise HarnessError(f"figure {spec.name} has kind '{spec.kind}': use 'curve' or 'tsne'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(spec.panels) if spec.kind == "curve" else len(spec.rows)
    fig = plt.figure(figsize=(4.5 * n, 4.4), layout="constrained")
    (_curves if spec.kind == "curve" else _tsne)(spec, records, fig)
    fig.suptitle(
        f"{spec.caption}\n(measured at preset {context['preset']}: {context['scale']})", fontsize=8
    )
    return _save(fig, out_dir, spec.name)
