"""Table 6: frozen-backbone COCO detection (paper Appendix B.3; spec/evals.md §6): the encoder
frozen, detectron2's ViTDet pyramid and Faster R-CNN box heads trained for 45 000 iterations
at batch 32 on COCO 2017 train, scored on val2017. AP as fractions (0–1), as the paper prints
it."""

from tables import Column, TableSpec

TABLE = TableSpec(
    name="table6",
    caption="Frozen-backbone object detection on COCO 2017 val (box AP as fractions).",
    rows=("moco_v3", "moco_v3+ser", "moco_v3+stl", "moco_v3+augself"),
    columns=tuple(Column("coco", m, "detection") for m in ("mAP", "mAP50", "mAP75")),
    row_labels={
        "moco_v3": "MoCo-v3",
        "moco_v3+ser": "+ SER",
        "moco_v3+stl": "+ STL",
        "moco_v3+augself": "+ AugSelf",
    },
    reference="table6.csv",
    decimals=3,
)
