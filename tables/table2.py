"""Table 2: linear evaluation of MoCo-v3, DINO and Barlow Twins, each with and without SER.

The paper's Table 2 also has ImageNet-V2/Sketch/R columns read with the ImageNet linear
head; they are added when their dataset readers land (evaluation suite).
"""
from tables import Column, TableSpec

TABLE = TableSpec(
    name="table2",
    caption="Linear evaluation (top-1 / top-5, \\%) of SSL methods with and without SER.",
    rows=(
        "moco_v3", "moco_v3+ser",
        "dino", "dino+ser",
        "barlow_twins", "barlow_twins+ser",
    ),
    columns=(Column("imagenet", "top1"), Column("imagenet", "top5")),
    row_labels={
        "moco_v3": "MoCo-v3", "dino": "DINO", "barlow_twins": "Barlow Twins",
        "moco_v3+ser": "+ SER", "dino+ser": "+ SER", "barlow_twins+ser": "+ SER",
    },
    reference="table2.csv",
)
