"""Figure 4: t-SNE of final [CLS] features of 20 random ImageNet-1k classes, MoCo-v3 vs + SER."""
from tables import Column, FigureSpec

TABLE = FigureSpec(
    name="figure4",
    caption="Figure 4: t-SNE of 20 random ImageNet-1k classes.",
    rows=("moco_v3", "moco_v3+ser"),
    columns=(Column("imagenet", "points", "tsne"),),
    row_labels={"moco_v3": "(a) MoCo-v3", "moco_v3+ser": "(b) MoCo-v3 + SER"},
    kind="tsne",
)
