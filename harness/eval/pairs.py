"""The transformation probe's pairs (spec/evals.md §6): two classes g1, g2 per image drawn
independently, the label the class of g2·g1⁻¹, the input the two views' features concatenated;
and the measures of that pairing that ``harness methods --departures`` prints."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.eval.heads import make_head, predict, shuffled, train_head
from harness.model.group import D4

# Each task's elements in the order of the powers of its generator (rot90, hflip): class c is
# generator^c, so the class of g2·g1⁻¹ is (c2 − c1) mod n (relative_labels).
TASKS = {"rotation": [D4(0, k) for k in range(4)], "hflip": [D4(0, 0), D4(1, 0)]}
# The test pairs' draw: fixed, the same for every probe seed, layer and model.
TEST_PAIR_SEED = 1_000_003


def _stack(per_label: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat(list(per_label)).float()
    y = torch.cat([torch.full((len(f),), c, dtype=torch.long) for c, f in enumerate(per_label)])
    return x, y


def relative_labels(c1: torch.Tensor, c2: torch.Tensor, n: int) -> torch.Tensor:
    """The class of g2·g1⁻¹ when class c is the c-th power of a generator of order ``n``
    (TASKS): rotation (k2 − k1) mod 4, hflip b1 xor b2."""
    return (c2 - c1) % n


def draw_pairs(n_images: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(c1, c2): for every image two classes drawn independently and uniformly from ``g``."""
    c = torch.randint(n, (2, n_images), generator=g)
    return c[0], c[1]


def pair_inputs(
    feats_a: torch.Tensor, feats_b: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor
) -> torch.Tensor:
    """concat(f_A(g1·x), f_B(g2·x)) per image; ``feats_a[c]`` / ``feats_b[c]`` (n×N×D) hold
    the features of view A / view B of every image under class c."""
    rows = torch.arange(feats_a.shape[1], device=feats_a.device)
    c1, c2 = c1.to(feats_a.device), c2.to(feats_a.device)
    return torch.cat([feats_a[c1, rows], feats_b[c2, rows]], dim=1)


def relative_epochs(
    feats_a: torch.Tensor, feats_b: torch.Tensor, batch_size: int, g: torch.Generator
):
    """One epoch of relative pairs: one pair per image of ``feats_a`` / ``feats_b`` (n×N×D)
    drawn afresh from ``g`` each call, as SIE draws two views per object per epoch, in a
    shuffled order."""
    n = len(feats_a)

    def epoch():
        c1, c2 = draw_pairs(feats_a.shape[1], n, g)
        y = relative_labels(c1, c2, n).to(feats_a.device)
        yield from shuffled(pair_inputs(feats_a, feats_b, c1, c2), y, batch_size, g)()

    return epoch


def pair_draw_effect(n_pairs: int = 100_000) -> str:
    """One line: the majority-class share of the relative labels (what a head that ignores
    its input scores) when g1, g2 are drawn independently (here) and as two distinct
    elements (SIE's ``rng.choice(50, 2, replace=False)`` applied to the task's elements)."""
    g = torch.Generator().manual_seed(0)
    parts = []
    for task, elements in TASKS.items():
        n = len(elements)
        c1, c2 = draw_pairs(n_pairs, n, g)
        same = relative_labels(c1, c2, n)
        # Distinct: c2 uniform over the n - 1 classes other than c1.
        d2 = (c1 + 1 + torch.randint(n - 1, (n_pairs,), generator=g)) % n
        distinct = relative_labels(c1, d2, n)
        share = [
            100.0 * torch.bincount(y, minlength=n).max().item() / n_pairs for y in (same, distinct)
        ]
        parts.append(f"{task} {share[0]:.1f} % (independent) vs {share[1]:.1f} % (distinct)")
    return "majority-class share of relative labels: " + "; ".join(parts)


def equality_shortcut() -> str:
    """One line: accuracy of the probe on fixed features that carry no information about the
    element: each image's content (shared by both views and every element) plus independent
    noise per image, view and element; 256 train / 2048 test images of 8 dims, a 64-wide MLP
    head, 40 epochs; about a second on a CPU. Relative with two views (the protocol): both
    halves always differ, chance. Relative with view A in both halves (version 2): pairs with
    g1 = g2 have identical halves, so a head that compares them gets those right: rotation
    tends to 25 + 75/3 = 50 %, hflip to 100 %. Absolute: chance (25 %, 50 %)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small run slower on more threads, of a busy CPU
    try:
        return _equality_shortcut()
    finally:
        torch.set_num_threads(threads)


def _equality_shortcut() -> str:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    parts = []
    for task, elements in TASKS.items():
        n = len(elements)
        (tr_a, tr_b), (te_a, te_b) = (_uninformative_views(n, m, 8, g) for m in (256, 2048))
        acc = {}
        for pairing in ("two views", "one view", "absolute"):
            if pairing == "absolute":
                tx, ty = _stack(list(tr_a))
                vx, vy = _stack(list(te_a))
                epoch = shuffled(tx, ty, 64, g)
            else:
                b_tr, b_te = (tr_b, te_b) if pairing == "two views" else (tr_a, te_a)
                c1, c2 = draw_pairs(te_a.shape[1], n, torch.Generator().manual_seed(TEST_PAIR_SEED))
                vx, vy = pair_inputs(te_a, b_te, c1, c2), relative_labels(c1, c2, n)
                epoch = relative_epochs(tr_a, b_tr, 64, g)
            model = make_head("mlp", vx.shape[1], n, hidden=64)
            train_head(model, epoch, 40, 1e-3)
            acc[pairing] = 100.0 * (predict(model, vx).argmax(1) == vy).float().mean().item()
        parts.append(
            f"{task} relative {acc['two views']:.1f} % (two views) vs {acc['one view']:.1f} % "
            f"(one view, v2), absolute {acc['absolute']:.1f} % (chance {100 / n:.0f} %)"
        )
    return "features with no information about g: " + "; ".join(parts)


def _uninformative_views(n: int, n_images: int, dim: int, g: torch.Generator):
    """Views A and B (n×N×D): each image's content, the same in both views and under every
    element, plus independent noise per image, view and element."""
    content = torch.randn(1, n_images, dim, generator=g)
    return [content + torch.randn(n, n_images, dim, generator=g) for _ in range(2)]
