"""Table 7: Top-1 accuracy (%) on ImageNet-C per corruption (mean over severities 1–5)."""

from tables.robustness import robustness_table

TABLE = robustness_table(
    7,
    "imagenet_c",
    "top1",
    "Top-1 accuracy (\\%) on ImageNet-C per corruption (mean over severities 1--5).",
)
