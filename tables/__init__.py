"""Table specs: one module per paper table or figure (``tables/table2.py`` …).

A spec declares *what* a table reports — rows (registered method names) and columns
(dataset × metric) — and nothing about how or where it runs; ``harness.run.planning`` turns it
into jobs, ``harness.report.tables`` renders what those jobs produced.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError

REFERENCE_DIR = Path(__file__).parent / "reference"

# How the paper prints dataset and row names.
DATASET_LABELS = {
    "imagenet": "ImageNet-1k",
    "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_v2": "ImageNet-V2",
    "imagenet_r": "ImageNet-R",
    "imagenet_c": "ImageNet-C",
    "imagenet_p": "ImageNet-P",
    "3diebench": "3DIEBench",
    "coco": "COCO 2017",
    "model": "Params",
}
# When a table holds several evaluations, each column group's header names its evaluation.
EVALUATION_LABELS = {
    "linear": "linear",
    "mlp": "MLP probe",
    "finetune": "fine-tuning",
    "knn": "20-NN",
    "equivariance": "equivariance score",
    "transform_probe": "transformation prediction",
    "tsne": "t-SNE",
    "detection": "frozen detection",
    "params": "",  # the column's header says it all
}
METRIC_LABELS = {
    "params_m": "(M)",
    "top1": "Top-1",
    "top5": "Top-5",
    "mlp_top1": "Top-1",
    "mlp_top5": "Top-5",
    "finetune_top1": "Top-1",
    "finetune_top5": "Top-5",
    "knn20_top1": "Top-1",
    "equiv_rotation": "Rotation",
    "equiv_hflip": "Flip",
    "equiv_scale": "Scale",
    "rotation_pred_acc": "Rotation",
    "hflip_pred_acc": "Flip",
    "mAP": "mAP",
    "mAP50": "AP50",
    "mAP75": "AP75",
}


@dataclass(frozen=True)
class Column:
    dataset: str
    metric: str
    evaluation: str = "linear"
    ranked: bool = True  # the best value is bolded (not for counts such as parameters)

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)


@dataclass(frozen=True)
class TableSpec:
    name: str
    caption: str
    rows: tuple[str, ...]
    columns: tuple[Column, ...]
    row_labels: dict = field(default_factory=dict)
    reference: str | None = None  # CSV in tables/reference/, the paper's numbers
    higher_is_better: bool = True
    decimals: int = 2  # digits after the point, measured and reference alike (as printed)

    def row_label(self, method: str) -> str:
        return self.row_labels.get(method, method)

    @property
    def evaluations(self) -> list[tuple[str, str]]:
        """Distinct (evaluation, dataset) pairs, in column order."""
        seen: list[tuple[str, str]] = []
        for c in self.columns:
            job = (c.evaluation, c.dataset.split("/")[0])  # imagenet_c/fog comes from imagenet_c
            if job not in seen:
                seen.append(job)
        return seen

    def reference_path(self) -> Path | None:
        return REFERENCE_DIR / self.reference if self.reference else None


@dataclass(frozen=True)
class FigureSpec(TableSpec):
    """A figure: rows and columns as a table's (so the same jobs run), drawn as ``kind``.

    ``curve``: each panel is (title, x-label, {method: x}) and plots the columns against x;
    ``tsne``: one scatter per row from the ``tsne`` evaluation's points.
    """

    kind: str = "curve"
    panels: tuple = ()


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.stem for pattern in ("table*.py", "figure*.py") for p in here.glob(pattern))


def load(name: str) -> TableSpec:
    if name not in available():
        raise HarnessError(
            f"unknown table or figure '{name}'; choose one of: {', '.join(available())}"
        )
    return importlib.import_module(f"tables.{name}").TABLE
