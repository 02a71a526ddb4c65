"""Table 2: linear evaluation of MoCo-v3, DINO and Barlow Twins, each with and without SER,
on ImageNet-1k and, with the same ImageNet linear head, on ImageNet-Sketch, -V2 and -R."""

from tables import Column, TableSpec

TABLE = TableSpec(
    name="table2",
    caption="Linear evaluation (top-1 / top-5, \\%) of SSL methods with and without SER.",
    rows=(
        "moco_v3",
        "moco_v3+ser",
        "dino",
        "dino+ser",
        "barlow_twins",
        "barlow_twins+ser",
    ),
    columns=tuple(
        Column(d, m)
        for d in ("imagenet", "imagenet_sketch", "imagenet_v2", "imagenet_r")
        for m in ("top1", "top5")
    ),
    row_labels={
        "moco_v3": "MoCo-v3",
        "dino": "DINO",
        "barlow_twins": "Barlow Twins",
        "moco_v3+ser": "+ SER",
        "dino+ser": "+ SER",
        "barlow_twins+ser": "+ SER",
    },
    reference="table2.csv",
)
