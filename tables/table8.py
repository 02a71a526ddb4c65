"""Table 8: Top-1 accuracy (%) on ImageNet-P per perturbation, over all frames."""

from tables.robustness import robustness_table

TABLE = robustness_table(
    8, "imagenet_p", "top1", "Top-1 accuracy (\\%) on ImageNet-P per perturbation, over all frames."
)
