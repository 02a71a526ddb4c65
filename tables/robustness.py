"""Shared layout of Tables 7–11: Table 1's rows (Table 9: the other base methods), one column per ImageNet-C
corruption or ImageNet-P perturbation, then their average, read with the ImageNet head."""

from harness.data.readers import CORRUPTIONS, PERTURBATIONS
from tables import Column, TableSpec
from tables.table1 import TABLE as TABLE1

SETS = {"imagenet_c": CORRUPTIONS, "imagenet_p": PERTURBATIONS}


def robustness_table(
    number: int, dataset: str, metric: str, caption: str, rows=None, row_labels=None
) -> TableSpec:
    cols = tuple(Column(f"{dataset}/{n}", metric) for n in (*SETS[dataset], "avg"))
    return TableSpec(
        name=f"table{number}",
        caption=caption,
        rows=rows or TABLE1.rows,
        columns=cols,
        row_labels=row_labels or TABLE1.row_labels,
        reference=f"table{number}.csv",
    )
