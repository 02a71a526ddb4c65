"""Table 5: how well SIE's MLP probe on frozen, mean-pooled features of layers 1, 3, 6, 9 and 12
predicts the relative 90° rotation (4-way) and horizontal flip (2-way) between two views of an
image (harness/eval/transform_probe.py; ``transform_probe.target=absolute`` the single-image
labels).
The evaluation also measures a randomly initialised encoder as the floor (``random_init/``
entries of its result)."""

from tables import Column, TableSpec

LAYERS = (1, 3, 6, 9, 12)
TABLE = TableSpec(
    name="table5",
    caption="Transformation prediction accuracy (\\%) from frozen features of each layer.",
    rows=("moco_v3+ser", "moco_v3+augself", "moco_v3+stl"),
    columns=tuple(
        Column(f"imagenet/layer{k}", m, "transform_probe")
        for m in ("rotation_pred_acc", "hflip_pred_acc")
        for k in LAYERS
    ),
    row_labels={
        "moco_v3+ser": "MoCo + SER",
        "moco_v3+augself": "MoCo + AugSelf",
        "moco_v3+stl": "MoCo + STL",
    },
    reference="table5.csv",
)
