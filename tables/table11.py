"""Table 11: Top-5 accuracy (%) on ImageNet-P per perturbation, over all frames."""

from tables.robustness import robustness_table

TABLE = robustness_table(
    11,
    "imagenet_p",
    "top5",
    "Top-5 accuracy (\\%) on ImageNet-P per perturbation, over all frames.",
)
