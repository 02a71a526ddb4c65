"""Table 10: Top-5 accuracy (%) on ImageNet-C per corruption (mean over severities 1–5)."""

from tables.robustness import robustness_table

TABLE = robustness_table(
    10,
    "imagenet_c",
    "top5",
    "Top-5 accuracy (\\%) on ImageNet-C per corruption (mean over severities 1--5).",
)
