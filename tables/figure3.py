"""Figure 3: linear top-1 / top-5 against where SER acts — the equivariance layer K (left,
[CLS] after block K) and the [CLS] insertion layer C with K = 3 (right)."""

from tables import Column, FigureSpec

LAYERS = range(1, 13)
EQUIV = {f"moco_v3+ser@layer{k}": k for k in LAYERS}
CLS = {f"moco_v3+ser@layer3@cls{c}": c for c in LAYERS}

TABLE = FigureSpec(
    name="figure3",
    caption="Figure 3: ImageNet-1k linear accuracy against the equivariance layer (left) and "
    "the [CLS] layer at K = 3 (right).",
    rows=tuple(EQUIV) + tuple(CLS),
    columns=(Column("imagenet", "top1"), Column("imagenet", "top5")),
    kind="curve",
    panels=(("equivariance layer K", "K", EQUIV), ("[CLS] layer C (K = 3)", "C", CLS)),
)
