"""Every place the harness computes something other than the public SER code (aitrics-chris/SER,
whose runs are the paper's numbers): what the public code does, what the harness does by
default, the name that gives the other behaviour, and why. ``harness methods --departures``
prints this list and README.md's table mirrors it; a test keeps the two in step.

``other`` is the modifier or setting that switches to the behaviour the default does not
have; ``None`` where there is none yet (the entry then says what stands in the way).

``measure`` names the function that measures the size of the difference now, on fixed tensors
(``harness/instruments/effects.py``, or the method's own module); ``measured`` calls it, and both the
listing and the table print its line. The texts state what differs, the line by how much.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Departure:
    key: str  # a short name, as tests and notes refer to it
    where: str  # the methods / add-ons / evaluations it touches
    public: str  # what the public SER code computes
    harness: str  # what the harness computes by default
    other: str | None  # the modifier or setting that gives the other one
    why: str
    # "module:function" of a zero-argument function that measures, at call time on fixed
    # tensors (CPU, well under a second), the size of the difference and returns it as one
    # line; ``measured`` calls it, so the printed number and the code cannot disagree.
    measure: str | None = None
    # Where a switch exists but nothing can be measured on fixed tensors: why not.
    unmeasured: str | None = None


DEPARTURES: tuple[Departure, ...] = (
    Departure(
        "ser-gradient",
        "+ser",
        "gathers the token sets under no_grad, so L_equiv trains nothing (its value is logged)",
        "L_equiv's gradient reaches the backbone, as the paper's equations state",
        "+ser_detached",
        "the paper describes a regulariser of the encoder; the detached one is the ablation",
        measure="harness.instruments.effects:ser_gradient_effect",
    ),
    Departure(
        "pos-embed-interpolation",
        "every view off the 14×14 grid (SER's scale views, DINO's local crops, E-SSL's crops, "
        "the equivariance score's scale term)",
        "DINO's interpolate_pos_encoding: bicubic F.interpolate with scale_factor "
        "((w0+0.1)/√N, (h0+0.1)/√N), w0 = patch rows, h0 = patch columns",
        "the same: the public formula",
        "model.pos_interp=timm",
        "matches the public code; `model.pos_interp=timm` gives timm's resample_abs_pos_embed to "
        "the target size (F.interpolate with size=, which maps coordinates by the size ratio, "
        "not by the public code's +0.1 factors)",
        measure="harness.instruments.effects:pos_interp_effect",
    ),
    Departure(
        "ser-projector-order",
        "+ser",
        "projects the token map first (projector_equiv), then applies ρ_g to the projected map",
        "the same",
        "+ser@rho_first",
        "matches the public code; `@rho_first` applies ρ_g to the backbone's map and projects "
        "after (bicubic resizing does not commute with the GELU projector; the orders agree "
        "when both views share a grid)",
        measure="harness.instruments.effects:rho_first_effect",
    ),
    Departure(
        "ser-elements-per-gpu",
        "+ser on several GPUs",
        "one generator per GPU draws that GPU's token grid and 90° rotation each step; "
        "shapes are gathered first, so ranks may hold different grids",
        "the same: each rank draws from its own generator (seeded by run, step and rank); "
        "L_equiv is the mean over every rank's query tokens",
        "+ser@shared_grid",
        "matches the public code; `@shared_grid` draws one grid and rotation per global step "
        "for all ranks (the harness's earlier behaviour)",
        measure="harness.instruments.effects:shared_grid_effect",
    ),
    Departure(
        "frozen-patch-embed-init",
        "moco_v3 (frozen random patch projection)",
        "Conv2d's default init (uniform ±1/√fan_in ≈ ±0.036, random bias): SER's xavier "
        "block is commented out",
        "the same: Conv2d's default init, frozen",
        "model.patch_embed_init=moco_v3",
        "matches the public code; `model.patch_embed_init=moco_v3` gives MoCo-v3's own uniform "
        "±√(6/(3·p²+D)) with zero bias",
        measure="harness.instruments.effects:patch_embed_init_effect",
    ),
    Departure(
        "dino-recipe",
        "dino",
        "teacher temperature warms 0.04 → 0.07 over 10 epochs (np.linspace); min_lr 1e-5",
        "as the public code",
        "recipe.teacher_temp=0.04 recipe.min_lr=1e-6",
        "closed (issue 13): the defaults are SER's main_dino.py's; the switch restores the "
        "harness's earlier recipe (teacher temperature 0.04 constant, min_lr 1e-6)",
        measure="harness.instruments.recipe_effects:dino_recipe_effect",
    ),
    Departure(
        "barlow-twins-recipe",
        "barlow_twins",
        "one AdamW group over all parameters, weight decay 0.1 (the bias lr is never used); "
        "per-tensor gradient clipping at 0.3",
        "as the public code",
        "recipe.bias_group=true recipe.weight_decay=1e-6 recipe.clip_per_tensor=false",
        "closed (issue 13): the defaults are SER's main_barlowtwins.py's for vit_small; the "
        "switch restores the harness's earlier recipe (the official Barlow Twins' bias group "
        "at bias_lr without decay, weights at 1e-6, global-norm clipping)",
        measure="harness.instruments.recipe_effects:barlow_recipe_effect",
    ),
    Departure(
        "barlow-twins-gradient-scale",
        "barlow_twins on W GPUs",
        "all-reduces the cross-correlation in place, outside autograd: each rank "
        "back-propagates its own share, 1/W of the true gradient",
        "the exact gradient",
        "recipe.public_grad_scale=true",
        "the exact gradient is the loss the paper states; the switch gives the public 1/W "
        "gradient, on which clipping at 0.3 acts differently",
        measure="harness.instruments.recipe_effects:barlow_grad_scale_effect",
    ),
    Departure(
        "augself-targets",
        "+augself",
        "extract_diff mirrors both crop centres with view a's flip, the (b, a) order with "
        "view b's (AugSelf's repository does the same)",
        "the same",
        "+augself@original",
        "matches the public code; `@original` mirrors each view's centre by its own flip, as "
        "the AugSelf paper describes (the targets differ where exactly one view is flipped)",
        measure="harness.instruments.recipe_effects:augself_targets_effect",
    ),
    Departure(
        "equimod-batching",
        "+equimod",
        "the projector runs once per image set (clean, view 1, view 2: BatchNorm batches of "
        "B), the parameter embedding and predictor once on both views' 2B rows; loss ½ of "
        "the symmetric MoCo-v3 InfoNCE (×2τ, keys detached), τ 0.2",
        "the same",
        "+equimod@original",
        "matches the public code; `@original` is EquiMod's repository: the projector once "
        "over the 3B rows [clean; view 1; view 2], embedding and predictor once over 2B, "
        "NT-Xent over the 4B set [y1, y2, ŷ1, ŷ2] (the joint batch changes BatchNorm's "
        "statistics in train mode only)",
        measure="methods.equimod:batching_effect",
    ),
    Departure(
        "stl-projections",
        "+stl",
        "projects h1, h2, ĥ1, ĥ2 separately; both terms the symmetric MoCo-v3 InfoNCE, τ 0.2",
        "the same",
        "+stl@original",
        "matches the public code; `@original` is STL's repository: the same per-tensor "
        "projections (STL.forward projects y1, y2, ŷ1, ŷ2 separately too), NT-Xent over the "
        "2N set for both terms",
        measure="methods.stl:loss_effect",
    ),
    Departure(
        "addon-data",
        "+augself, +stl, +equimod",
        "each add-on's own loader: AugSelf (branch augself) crops at crop_min 0.08, then kornia "
        "0.4.1 flips, jitters (0.4, 0.4, 0.4, 0.1) p 0.8 with torchvision's brightness and "
        "contrast and its hue factor taken as radians, greys p 0.2 and blurs 23×23 p 0.5 on "
        "both views, no solarize; STL squashes the image to 224², shares one kornia crop "
        "(scale 0.2–1, slice + align_corners resize), ColorJiggle and grayscale draw per image "
        "pair, then flips and blurs 9×9 p 0.5 per image, no solarize; EquiMod: torchvision per "
        "image, 9×9 blur p 1.0 / 0.1, solarize p 0 / 0.2, a bilinear clean view, parameters "
        "standardised with fixed constants",
        "the same for all three (views.addon_data=ser, harness/data/addon_views.py); AugSelf's "
        "colour targets normalised by its own jitter ranges",
        "views.addon_data=base",
        "matches the public code (closed, issue 24); `views.addon_data=base` gives the "
        "harness's earlier views: the base method's (views.photometric) with the add-on's view "
        "policy, EquiMod's standardisation fitted on the run's own augmentation. Left: crop "
        "boxes drawn with torchvision's sampler (STL's too), STL's resized slice rounded to "
        "uint8; AugSelf's @layerK (public: a LayerNorm'd [CLS] kept from the input) differs",
        measure="harness.data.addon_views:addon_data_effect",
    ),
    Departure(
        "essl-head-lambda",
        "+essl",
        "train_essl adds equiv_lambda · CE (mean over the 4B rotated crops, once), "
        "equiv_lambda = 1.0 (main_moco.py's default; no E-SSL command is published); head "
        "Linear(384, 384)-LN-ReLU ×2, Linear(384, 256)-LN, Linear(256, 4) on the online final "
        "[CLS]; the same head in builder/dino.py and builder/barlowtwins.py, whose defaults are "
        "λ 0.3 and 1.0",
        "the same on every base (the projection width scaled with the preset)",
        "+essl@original",
        "SER's code is what ran; `@original` gives E-SSL's own values (λ 0.4 with the 128-wide "
        "projection of E-SimCLR; Barlow Twins λ 8, 256), the harness's earlier default",
        measure="methods.essl:head_lambda_effect",
    ),
    Departure(
        "kornia-photometric",
        "every view of moco_v3, dino, barlow_twins (with +ser or +essl; +augself, +stl and "
        "+equimod under views.addon_data=base), SER's B2 views included",
        "kornia on the GPU (Aug_equi.inv1/inv2): ColorJiggle(0.4, 0.4, 0.2, 0.1, p=0.8) "
        "(brightness added, contrast multiplied, saturation and hue in HSV; one jitter order "
        "per batch), RandomGrayscale(0.2), GaussianBlur 9×9 σ∈[0.1, 2] (p=1 view 1, p=0.1 "
        "view 2), RandomSolarize(thresholds=0.5: threshold ~ U(0, 1), p=0.2 on view 2)",
        "the same (views.photometric=kornia), rendered in float on the workers or the GPU",
        "views.photometric=torchvision",
        "matches the public code; `views.photometric=torchvision` gives the base methods' own "
        "repositories' pipeline (torchvision's ColorJitter with a per-image order, a 23×23 "
        "blur, solarize at 128)",
        measure="harness.instruments.recipe_effects:kornia_photometric_effect",
    ),
    Departure(
        "ser-2plus4-loss",
        "+ser with multicrop (2+4)",
        "erl_local4 sets bs before flattening to tokens: its positives, mask offsets and "
        "normaliser are wrong (it barely tells aligned from shuffled token maps, and passes "
        "no gradient)",
        "a token InfoNCE over one global and two local pairs that trains",
        None,
        "the public function computes nothing to reproduce: there is no switch to it",
        measure="harness.instruments.recipe_effects:ser_2plus4_effect",
    ),
    Departure(
        "moco-v3-multicrop-scale",
        "moco_v3 with multicrop (2+4)",
        "inv_local4 / erl_local4 sum the contrastive loss (×2τ) over all ten pairs of a view's "
        "query and a global key of another view",
        "the same: the sum over the ten pairs",
        "recipe.multicrop_scale=pairs",
        "matches the public code; `recipe.multicrop_scale=pairs` rescales the sum by "
        "2/len(pairs) to the two-view loss's weight (the harness's earlier L_inv), which "
        "weighs L_equiv more against L_inv",
        measure="methods.moco_v3:multicrop_scale_effect",
    ),
    Departure(
        "multicrop-local-crops",
        "every base method with multicrop (2+4)",
        "loader/local4.py: RandomResizedCrop(96, scale (0.05, 0.25), bilinear), flip; on the "
        "GPU ColorJiggle(0.4, 0.4, 0.2, 0.1, p=0.8) and a 9×9 blur σ∈[0.1, 2] at p=0.5; no "
        "grayscale, no solarize; erl_local4 renders every +ser B2 view with that GPU part, the "
        "global pair's too",
        "the same (views.local_crops=ser); below 224 px the blur scales with the global views",
        "views.local_crops=dino",
        "matches the public code; `views.local_crops=dino` gives DINO's main_dino.py local "
        "crops (scale (0.05, 0.4), bicubic, grayscale p=0.2), near the harness's earlier ones "
        "(which took the method's interpolation and shrank the blur to the 96-px crop)",
        measure="harness.data.pipelines:local_crops_effect",
    ),
)


@functools.cache
def measured(d: Departure) -> str:
    """The measured size of ``d``'s effect, one line: ``d.measure``'s function called now (on
    fixed tensors, so the number printed is the one the code gives today)."""
    if d.measure is None:
        if d.unmeasured:
            return f"not measured: {d.unmeasured}"
        if d.other is None:
            return "not measured: there is no switch to the other behaviour to compare with"
        return "not measured yet"
    import torch

    module, _, name = d.measure.partition(":")
    fn = getattr(importlib.import_module(module), name)
    # One thread: the numbers do not depend on the machine's core count (reduction order),
    # and small tensors run faster than on oversubscribed cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # measuring leaves the caller's RNG as it was
            line = fn()
    finally:
        torch.set_num_threads(threads)
    if not isinstance(line, str) or "\n" in line.strip():
        raise TypeError(f"{d.measure} must return one line of text, got {line!r}")
    return line.strip()


def _measured_or_error(d: Departure) -> str:
    # The listing still prints when one measurement breaks; its test (tests/methods/
    # test_departures.py) calls every measure directly, so a broken one fails there.
    try:
        return measured(d)
    except Exception as e:  # noqa: BLE001 - shown in place of the number
        return f"measurement failed ({d.measure}): {type(e).__name__}: {e}"


def markdown(departures=None, public: str = "public SER code") -> str:
    """README.md's table of ``departures`` (default: pretraining's, ``DEPARTURES``); a test
    keeps the README's copy equal to this."""
    rows = [
        f"| departure | {public} | harness default | the other one | why | measured effect |",
        "|---|---|---|---|---|---|",
    ]
    for d in DEPARTURES if departures is None else departures:
        other = f"`{d.other}`" if d.other else "—"
        cells = [f"`{d.key}` ({d.where})", d.public, d.harness, other, d.why, measured(d)]
        # A '|' in a cell (|z| in a measured line) would split it: escaped, it renders as is.
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def render(departures=None) -> str:
    lines = []
    for d in DEPARTURES if departures is None else departures:
        lines += [
            f"{d.key} ({d.where})",
            f"  public code: {d.public}",
            f"  harness:     {d.harness}",
            f"  other one:   {d.other or '—'}",
            f"  why:         {d.why}",
            f"  measured:    {_measured_or_error(d)}",
        ]
    return "\n".join(lines)
