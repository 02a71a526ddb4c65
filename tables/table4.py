"""Table 4: equivariance at the last layer (cosine between ρ_g(f(g1·x)) and f(g2·x), g =
g2·g1⁻¹ sampled, for rotation, flip and scale; paper Appendix B.2, harness/eval/equivariance.py)
beside linear top-1, for SER at layers 3, 9, 12 and for the final-layer add-ons."""

from tables import Column, TableSpec

TABLE = TableSpec(
    name="table4",
    caption="Last-layer equivariance score (higher: more equivariant) and ImageNet-1k linear "
    "top-1. The layer-12 SER row is scored on block 12's tokens after SER's norm\\_equiv "
    "LayerNorm (the one its loss trains), every other row after the final LayerNorm.",
    rows=(
        "moco_v3+ser@layer3",
        "moco_v3+ser@layer9",
        "moco_v3+ser@layer12",
        "moco_v3+augself",
        "moco_v3+stl",
    ),
    columns=(
        Column("imagenet", "equiv_rotation", "equivariance"),
        Column("imagenet", "equiv_hflip", "equivariance"),
        Column("imagenet", "equiv_scale", "equivariance"),
        Column("imagenet", "top1", "linear"),
    ),
    row_labels={
        "moco_v3+ser@layer3": "MoCo + SER (layer 3)",
        "moco_v3+ser@layer9": "MoCo + SER (layer 9)",
        "moco_v3+ser@layer12": "MoCo + SER (layer 12)",
        "moco_v3+augself": "MoCo + AugSelf",
        "moco_v3+stl": "MoCo + STL",
    },
    reference="table4.csv",
)
