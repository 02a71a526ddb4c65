"""Figure 5: t-SNE of 20 random ImageNet-C classes under defocus blur (severity set by the
preset's ``tsne`` section), MoCo-v3 vs + SER."""
from tables import Column, FigureSpec

TABLE = FigureSpec(
    name="figure5",
    caption="Figure 5: t-SNE of 20 random ImageNet-C classes under defocus blur.",
    rows=("moco_v3", "moco_v3+ser"),
    columns=(Column("imagenet_c", "points", "tsne"),),
    row_labels={"moco_v3": "(a) MoCo-v3", "moco_v3+ser": "(b) MoCo-v3 + SER"},
    kind="tsne",
)
