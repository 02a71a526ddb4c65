"""Shared layout of Figures 4 and 5: MoCo-v3 beside MoCo-v3 + SER, one t-SNE scatter each."""

from tables import Column, FigureSpec


def tsne_figure(name: str, dataset: str, caption: str) -> FigureSpec:
    return FigureSpec(
        name=name,
        caption=caption,
        rows=("moco_v3", "moco_v3+ser"),
        columns=(Column(dataset, "points", "tsne"),),
        row_labels={"moco_v3": "(a) MoCo-v3", "moco_v3+ser": "(b) MoCo-v3 + SER"},
        kind="tsne",
    )
