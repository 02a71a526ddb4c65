"""Figure 4: t-SNE of final [CLS] features of 20 random ImageNet-1k classes, MoCo-v3 vs + SER."""

from tables.tsne import tsne_figure

TABLE = tsne_figure("figure4", "imagenet", "Figure 4: t-SNE of 20 random ImageNet-1k classes.")
