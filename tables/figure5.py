"""Figure 5: t-SNE of 20 random ImageNet-C classes under defocus blur (severity set by the
preset's ``tsne`` section), MoCo-v3 vs + SER."""

from tables.tsne import tsne_figure

TABLE = tsne_figure(
    "figure5", "imagenet_c", "Figure 5: t-SNE of 20 random ImageNet-C classes under defocus blur."
)
