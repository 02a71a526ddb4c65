"""Table 3: non-linear evaluations of Table 1's rows on ImageNet-1k: 3-layer MLP probe,
full fine-tuning (DeiT recipe; scaled down below the paper preset) and weighted 20-NN."""

from tables import Column, TableSpec
from tables.table1 import TABLE as TABLE1

TABLE = TableSpec(
    name="table3",
    caption="Non-linear evaluations on ImageNet-1k (\\%): MLP probe, fine-tuning and 20-NN.",
    rows=TABLE1.rows,
    columns=(
        Column("imagenet", "mlp_top1", "mlp"),
        Column("imagenet", "mlp_top5", "mlp"),
        Column("imagenet", "finetune_top1", "finetune"),
        Column("imagenet", "finetune_top5", "finetune"),
        Column("imagenet", "knn20_top1", "knn"),
    ),
    row_labels=TABLE1.row_labels,
    reference="table3.csv",
)
