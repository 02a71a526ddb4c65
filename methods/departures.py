"""Every place the harness computes something other than the public SER code (aitrics-chris/SER,
whose runs are the paper's numbers): what the public code does, what the harness does by
default, the name that gives the other behaviour, and why. ``harness methods --departures``
prints this list and README.md's table mirrors it; a test keeps the two in step.

``other`` is the modifier or setting that switches to the behaviour the default does not
have; ``None`` where there is none yet (the entry then says what stands in the way).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Departure:
    key: str  # a short name, as tests and notes refer to it
    where: str  # the methods / add-ons / evaluations it touches
    public: str  # what the public SER code computes
    harness: str  # what the harness computes by default
    other: str | None  # the modifier or setting that gives the other one
    why: str


DEPARTURES: tuple[Departure, ...] = (
    Departure(
        "ser-gradient",
        "+ser",
        "gathers the token sets under no_grad, so L_equiv trains nothing (its value is logged)",
        "L_equiv's gradient reaches the backbone, as the paper's equations state",
        "+ser_detached",
        "the paper describes a regulariser of the encoder; the detached one is the ablation",
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
        "the target size (11–14 % relative in the interpolated table on 13×15 … 16×16 grids)",
    ),
    Departure(
        "ser-projector-order",
        "+ser",
        "projects the token map first (projector_equiv), then applies ρ_g to the projected map",
        "the same",
        "+ser@rho_first",
        "matches the public code; `@rho_first` applies ρ_g to the backbone's map and projects "
        "after (bicubic resizing does not commute with the GELU projector: 1.7e-5 to 4e-4 "
        "relative in the loss; equal when both views share a grid)",
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
    ),
    Departure(
        "frozen-patch-embed-init",
        "moco_v3 (frozen random patch projection)",
        "Conv2d's default init (uniform ±1/√fan_in ≈ ±0.036, random bias): SER's xavier "
        "block is commented out",
        "the same: Conv2d's default init, frozen",
        "model.patch_embed_init=moco_v3",
        "matches the public code; `model.patch_embed_init=moco_v3` gives MoCo-v3's own uniform "
        "±0.072 with zero bias",
    ),
    Departure(
        "dino-recipe",
        "dino",
        "teacher temperature warms 0.04 → 0.07 over 10 epochs (np.linspace); min_lr 1e-5",
        "as the public code",
        "recipe.teacher_temp=0.04 recipe.min_lr=1e-6",
        "closed (issue 13): the defaults are SER's main_dino.py's; the switch restores the "
        "harness's earlier recipe (teacher temperature 0.04 constant, min_lr 1e-6)",
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
    ),
    Departure(
        "barlow-twins-gradient-scale",
        "barlow_twins on W GPUs",
        "all-reduces the cross-correlation in place, outside autograd: each rank "
        "back-propagates its own share, 1/W of the true gradient",
        "the exact gradient (measured ratio 2.000 at W = 2)",
        "recipe.public_grad_scale=true",
        "the exact gradient is the loss the paper states; the switch gives the public 1/W "
        "gradient, on which clipping at 0.3 acts differently",
    ),
    Departure(
        "augself-targets",
        "+augself",
        "extract_diff mirrors both crop centres with view a's flip, the (b, a) order with "
        "view b's (AugSelf's repository does the same)",
        "the same",
        "+augself@original",
        "matches the public code; `@original` mirrors each view's centre by its own flip, as "
        "the AugSelf paper describes (130 of 256 pairs differ)",
    ),
    Departure(
        "equimod-batching",
        "+equimod",
        "the parameter embedding and predictor run once on both views' 2B rows; loss ½ of "
        "the symmetric MoCo-v3 InfoNCE (×2τ, keys detached), τ 0.2",
        "the same",
        "+equimod@original",
        "matches the public code; `@original` runs them per view with NT-Xent over the 4B "
        "set, as EquiMod's repository (BatchNorm statistics differ)",
    ),
    Departure(
        "stl-projections",
        "+stl",
        "projects h1, h2, ĥ1, ĥ2 separately; both terms the symmetric MoCo-v3 InfoNCE, τ 0.2",
        "the same",
        "+stl@original",
        "matches the public code; `@original` projects [h1; h2] and [ĥ1; ĥ2] jointly with "
        "NT-Xent, as STL's repository",
    ),
    Departure(
        "addon-data",
        "+augself, +stl, +equimod",
        "each add-on's own loader: AugSelf's kornia pipeline (saturation 0.4, 23×23 blur p=0.5 "
        "on both views, no solarize); STL squashes the image to 224² and shares one crop "
        "(scale 0.2–1) and ColorJiggle per pair, 9×9 blur p=0.5, no solarize; EquiMod "
        "standardises parameters with fixed constants, torchvision jitter with a 9×9 blur",
        "the base method's views (kornia-photometric) with the add-on's view policy; EquiMod's "
        "standardisation fitted on the run's own augmentation",
        None,
        "open: the add-ons' heads and losses are the public code's, their data pipelines not "
        "yet; AugSelf's @layerK (public: a LayerNorm'd [CLS] kept from the input) also differs",
    ),
    Departure(
        "kornia-photometric",
        "every view of moco_v3, dino, barlow_twins (± add-ons), SER's B2 views included",
        "kornia on the GPU (Aug_equi.inv1/inv2): ColorJiggle(0.4, 0.4, 0.2, 0.1, p=0.8) "
        "(brightness added, contrast multiplied, saturation and hue in HSV; one jitter order "
        "per batch), RandomGrayscale(0.2), GaussianBlur 9×9 σ∈[0.1, 2] (p=1 view 1, p=0.1 "
        "view 2), RandomSolarize(thresholds=0.5: threshold ~ U(0, 1), p=0.2 on view 2)",
        "the same (views.photometric=kornia), rendered in float on the workers or the GPU",
        "views.photometric=torchvision",
        "matches the public code; `views.photometric=torchvision` gives the base methods' own "
        "repositories' pipeline (torchvision's ColorJitter with a per-image order, a 23×23 "
        "blur, solarize at 128)",
    ),
    Departure(
        "ser-2plus4-loss",
        "+ser with multicrop (2+4)",
        "erl_local4 sets bs before flattening to tokens: its positives, mask offsets and "
        "normaliser are wrong (2049.85 on aligned maps, 2049.84 on shuffled, no gradient)",
        "a token InfoNCE over one global and two local pairs that trains",
        None,
        "the public function computes nothing to reproduce: there is no switch to it",
    ),
)


def markdown() -> str:
    """README.md's table (a test keeps the README's copy equal to this)."""
    rows = [
        "| departure | public SER code | harness default | the other one | why |",
        "|---|---|---|---|---|",
    ]
    for d in DEPARTURES:
        other = f"`{d.other}`" if d.other else "—"
        rows.append(f"| `{d.key}` ({d.where}) | {d.public} | {d.harness} | {other} | {d.why} |")
    return "\n".join(rows)


def render() -> str:
    lines = []
    for d in DEPARTURES:
        lines += [
            f"{d.key} ({d.where})",
            f"  public code: {d.public}",
            f"  harness:     {d.harness}",
            f"  other one:   {d.other or '—'}",
            f"  why:         {d.why}",
        ]
    return "\n".join(lines)
