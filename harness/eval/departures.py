"""Every place an evaluation computes something other than the code its numbers come from:
SER's lincls_parallel.py, run_eval.sh and config/eval.yaml (aitrics-chris/SER@dbe5e93) for
the linear probe, and where SER has no code, the code the evaluation's authors publish
(hendrycks/robustness for ImageNet-C/P, facebookresearch/SIE for 3DIEBench and the MLP and
transformation probes, DINO's eval_knn.py, DeiT's main.py). The entries read as
methods/departures.py's (``Departure``); ``harness methods --departures`` prints both lists
and README.md's tables mirror them (a test keeps them in step).

Defaults compute what that code computes; an entry whose default "matches" names the
setting that gives the other behaviour, an entry that differs by default says why.
"""

from __future__ import annotations

from methods.departures import Departure

EVAL_DEPARTURES: tuple[Departure, ...] = (
    Departure(
        "linear-selection-split",
        "linear probe; every column read with its head (V2, Sketch, R, C, P)",
        "two heads per checkpoint (config/eval.yaml), the best top-1 of epochs 41–50 on "
        "imagenet_eval/val selected and that head reported on the official val: the split "
        "it selects on may be the one it reports",
        "the same (linear.select_on=val); every caption that uses it says so",
        "linear.select_on=heldout",
        "matches the public code; `heldout` selects on a seeded 1 % of train "
        "(linear.heldout) kept out of the heads' training, so no reported number is chosen "
        "on itself",
        measure="harness.eval.imagenet_head:selection_effect",
    ),
    Departure(
        "linear-precision",
        "linear probe",
        "backbone and head under fp16 autocast, no gradient scaler (its GradScaler lines "
        "are commented out)",
        "the same (linear.precision=fp16); small presets' cached features are extracted "
        "in fp32 (shared with k-NN and the MLP probe), their heads run under fp16",
        "linear.precision=fp32",
        "matches the public code (a test replays its step bit for bit); fp32 is the "
        "precision of every other evaluation",
        measure="harness.eval.sweep:precision_effect",
    ),
    Departure(
        "linear-dino-lrs",
        "linear probe of DINO rows",
        "config/eval.yaml sweeps base lrs 3 and 10 for MoCo-v3 checkpoints and 1 and 3 for "
        "Barlow Twins; it lists no DINO checkpoint",
        "DINO rows sweep MoCo-v3's 3 and 10 (linear.base_lrs.dino)",
        "linear.base_lrs.dino=[1,3]",
        "the public code gives no DINO values; the paper's text names none",
        unmeasured="the public code has no DINO value to compare with",
    ),
    Departure(
        "robustness-preprocess",
        "ImageNet-C and -P columns, t-SNE on ImageNet-C",
        "the stored 224² images as they are: ImageNet-C/test.py CenterCrop(224) (a no-op) "
        "→ ToTensor → Normalize; ImageNet-P/test.py each MP4 frame viewed as 3×224×224",
        "the same (robustness.preprocess=official): centre crop to model.img_size, no resize",
        "robustness.preprocess=resize",
        "matches the public code; `resize` is the linear probe's val transform (Resize 256 + "
        "CenterCrop 224), the harness's earlier input",
        measure="harness.eval.imagenet_c:resize_effect",
    ),
    Departure(
        "robustness-small-images",
        "ImageNet-C and -P columns",
        "CenterCrop(224) zero-pads an image smaller than 224² (C); a frame of another size "
        "breaks view(-1, 3, 224, 224) (P)",
        "an image smaller than model.img_size is refused in one line naming its size",
        "robustness.preprocess=resize",
        "never pad silently; the released sets are all 224², so it never triggers on them",
        unmeasured="a refusal has no size; on the released 224² sets it never happens",
    ),
    Departure(
        "iebench-input",
        "3DIEBench column",
        "SIE's eval_classification.py: the stored 256² renders, ToTensor + Normalize with "
        "3DIEBench's mean/std, no crop",
        "the same (iebench.input=sie): a ViT pretrained at 224 px reads 256 px through its "
        "interpolated positional embedding (16×16 tokens)",
        "iebench.input=imagenet",
        "matches SIE's evaluation code; SIE's own encoder was trained at that resolution and "
        "with those statistics, an ImageNet encoder was not (`imagenet`: Resize + centre "
        "crop 224 with ImageNet's statistics)",
        measure="harness.eval.iebench:input_effect",
    ),
    Departure(
        "iebench-val-draw",
        "3DIEBench column",
        "one random view per val object, redrawn every epoch by an unseeded generator shared "
        "by its 10 loader workers; the last epoch's number is the one printed",
        "one view per val object drawn once with a seeded generator, scored after the last "
        "epoch (iebench.val_views=one)",
        "iebench.val_views=all",
        "repeatable with the same expectation; `all` scores every view, the expectation of "
        "SIE's number without its sampling noise",
        measure="harness.eval.iebench:one_view_spread",
    ),
    Departure(
        "iebench-patch-trim",
        "3DIEBench column, fixture trees only",
        "no crop (a ResNet takes any size)",
        "a centre crop to a whole number of patches (tiny's 36 px → 32); none on 256² renders",
        None,
        "a ViT needs whole patches; the released renders are 256², a multiple of 16",
    ),
    Departure(
        "mlp-standardize",
        "MLP probe (Table 3)",
        "SIE's --deep-end head (eval_classification.py) on raw features",
        "the same (mlp.standardize=false)",
        "mlp.standardize=true",
        "matches SIE; `true` fixes per-feature statistics first (MAE's BatchNorm without "
        "affine), which Adam at 1e-3 needs on features of small scale (6–8 points at tiny)",
        measure="harness.eval.mlp:standardize_effect",
    ),
    Departure(
        "mlp-fixed-views",
        "MLP probe (Table 3)",
        "each epoch a fresh random view of every 3DIEBench object",
        "the cached centre-crop features of every ImageNet image, the same each epoch",
        None,
        "ImageNet has one image per sample; re-augmenting it every epoch would cost a "
        "backbone pass per image and epoch (300 epochs), which SIE's cheap renders do not",
    ),
    Departure(
        "finetune-small-sets",
        "fine-tuning",
        "DeiT's RASampler keeps n//256·256 draws an epoch: an empty epoch below 256 images",
        "all n draws below 256 images (micro's 80); the same as DeiT from 256 on",
        None,
        "small presets must train at all",
    ),
    Departure(
        "finetune-mixup-batch",
        "fine-tuning",
        "one Mixup/CutMix draw per GPU batch of 64 (16 GPUs), which never pairs an image "
        "with its own repeat",
        "one draw per global batch in one process",
        None,
        "one process holds the global batch; the repeats of an image are consecutive",
        measure="harness.eval.finetune:measure_mixup_self_pairs",
    ),
    Departure(
        "finetune-precision",
        "fine-tuning",
        "fp16 autocast with a loss scaler for training and evaluation",
        "bf16 autocast for training on GPUs, fp32 evaluation",
        None,
        "bf16 needs no loss scaler on the GPUs the paper preset runs on (kept from before)",
    ),
    Departure(
        "finetune-ema",
        "fine-tuning",
        "keeps a model EMA (decay 0.99996) it does not evaluate",
        "no EMA",
        None,
        "it does not enter the reported number",
    ),
    Departure(
        "equivariance-reading",
        "equivariance score (Table 4)",
        "no public code; Appendix B.2 writes the score as a distance between ρ_g(f(x)) and "
        "f(ρ_g(x)) with (g1, g2) sampled and g = g2·g1⁻¹",
        "cos(ρ_g(f(g1·x)), f(g2·x)) per token, one sampled pair per image and "
        "transformation (equivariance.protocol=sampled), identity pairs included (they "
        "score 1), SER's scale grids drawn per image",
        "equivariance.protocol=fixed",
        "the reading of Algorithm 1's training pairs, the only one in which sampling both "
        "g1 and g2 matters; `fixed` scores fixed elements on f(x) (the harness's earlier "
        "score)",
        measure="harness.eval.equivariance:measure_view_reading",
    ),
    Departure(
        "equivariance-identity-pairs",
        "equivariance score (Table 4)",
        "an expectation over sampled (g1, g2), identities included",
        "the same: the pairs whose g2·g1⁻¹ is the identity are kept",
        "equivariance.protocol=fixed",
        "the literal expectation; `fixed` has no identity terms",
        measure="harness.eval.equivariance:measure_identity_pairs",
    ),
    Departure(
        "transform-probe-task",
        "transformation prediction (Table 5)",
        "SIE's eval_angle_prediction.py regresses the relative 3D rotation's quaternion "
        "(MSE, R²) between two renders of a 3DIEBench object",
        "the relative 90° rotation (4-way) or flip (2-way) between two views of an ImageNet "
        "image as a class (cross-entropy, accuracy), SIE's MLP head and recipe otherwise",
        "transform_probe.target=absolute",
        "the paper reports a classification accuracy per layer; `absolute` predicts each "
        "single image's own element (the harness's earlier probe)",
        unmeasured="a class accuracy and SIE's quaternion R² share no number",
    ),
    Departure(
        "transform-probe-views",
        "transformation prediction (Table 5)",
        "two distinct renders per object, redrawn every epoch (they differ beyond the "
        "rotation: floor and light)",
        "two fixed views per image, the centre crop and one seeded square crop (area "
        "0.35–1), under independently drawn g1, g2 (g1 = g2 included, so labels stay "
        "uniform); only g1, g2 are redrawn each epoch",
        None,
        "features are extracted once; two different crops keep a pair's halves from being "
        "identical when g1 = g2, which a head would spot without decoding orientation",
        measure="harness.eval.pairs:equality_shortcut",
    ),
)
