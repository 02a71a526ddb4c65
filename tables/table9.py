"""Table 9: ImageNet-P top-1 (%) per perturbation for DINO and Barlow Twins, each ± SER."""

from tables.robustness import robustness_table
from tables.table2 import TABLE as TABLE2

TABLE = robustness_table(
    9,
    "imagenet_p",
    "top1",
    "Top-1 accuracy (\\%) on ImageNet-P per perturbation for DINO and Barlow Twins, with and without SER.",
    rows=("dino", "dino+ser", "barlow_twins", "barlow_twins+ser"),
    row_labels=TABLE2.row_labels,
)
