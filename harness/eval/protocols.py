"""Each evaluation's protocol in words, from the config sections that produced a result (a
result record's ``eval_spec.sections``): what a table's caption states, and what the report
compares across rows, so a table never mixes protocols unawares.

``describe`` gives ordered (field, text) pairs; fields named in ``PER_ROW`` may differ
between the rows of one table (the linear probe's learning rates follow the row's base
method, as SER's config/eval.yaml sets them per checkpoint), every other field may not.
"""

from __future__ import annotations

PER_ROW = frozenset({"lrs"})

BASE_LABELS = {"moco_v3": "MoCo-v3", "dino": "DINO", "barlow_twins": "Barlow Twins"}


def _num(v) -> str:
    return f"{v:g}"


def _linear(lc: dict, base: str | None) -> list[tuple[str, str]]:
    lrs = lc["base_lrs"].get(base or "", lc["base_lrs"]["default"])
    where = (
        "on val, the split reported (as SER's code)"
        if lc["select_on"] == "val"
        else f"on a held-out {lc['heldout'] * 100:g} % of train"
    )
    return [
        ("features", f"last-{lc['n_last']} [CLS]"),
        (
            "recipe",
            f"SGD batch {lc['batch_size']}, {lc['epochs']} epochs cosine"
            + ("" if lc["augment"] else ", features cached without augmentation"),
        ),
        ("lrs", "base lr " + "/".join(_num(x) for x in lrs)),
        ("selection", f"best of epochs {lc['select_from'] + 1}–{lc['epochs']} {where}"),
        ("precision", "fp16 autocast" if lc["precision"] == "fp16" else "fp32"),
    ]


def _robustness(r: dict, lc: dict) -> list[tuple[str, str]]:
    if r["preprocess"] == "official":
        return [("input", "stored images, centre crop, no resize (hendrycks/robustness test.py)")]
    return [("input", f"resized to {lc['resize']} px and centre-cropped")]


def _iebench(ie: dict) -> list[tuple[str, str]]:
    return [
        ("probe", f"SIE's linear probe, Adam {_num(ie['lr'])} constant, {ie['epochs']} epochs"),
        (
            "input",
            "stored images with 3DIEBench's statistics, no crop"
            if ie["input"] == "sie"
            else "resized and cropped with ImageNet's statistics",
        ),
        (
            "val",
            "one seeded view per val object (SIE eval_classification.py)"
            if ie["val_views"] == "one"
            else "every view of each val object",
        ),
    ]


def _mlp(m: dict) -> list[tuple[str, str]]:
    return [
        (
            "recipe",
            f"3-layer MLP {m['hidden']} wide, Adam {_num(m['lr'])} {m['schedule']}, "
            f"{m['epochs']} epochs",
        ),
        ("features", "standardised" if m["standardize"] else "raw features (SIE)"),
    ]


def _knn(k: dict) -> list[tuple[str, str]]:
    ks = "/".join(str(x) for x in k["ks"])
    return [("recipe", f"{ks}-NN, T {_num(k['temperature'])} (DINO's eval_knn)")]


def _finetune(f: dict) -> list[tuple[str, str]]:
    rep = f["repeated_aug"] or 0
    return [
        ("recipe", f"DeiT recipe, {f['epochs']} epochs, batch {f['batch_size']}"),
        ("sampler", f"repeated augmentation ×{rep}" if rep > 1 else "plain shuffle"),
        ("report", f"{f['report']} epoch's val top-1"),
    ]


def _equivariance(e: dict) -> list[tuple[str, str]]:
    how = (
        "one sampled pair (g1, g2) per image, g = g2·g1⁻¹"
        if e["protocol"] == "sampled"
        else "fixed elements"
    )
    return [("recipe", f"last-layer tokens, {how}, {e['n_images']} val images")]


def _transform_probe(t: dict) -> list[tuple[str, str]]:
    return [
        (
            "recipe",
            f"{t['head']} head, Adam {_num(t['lr'])} {t['schedule']}, "
            f"{t['epochs']} epochs, {t['seeds']} seeds",
        ),
        (
            "target",
            "relative transformation between two views (centre crop, a seeded crop)"
            if t["target"] == "relative"
            else "each image's own transformation",
        ),
        ("features", "standardised" if t["standardize"] else "raw features"),
    ]


def _detection(d: dict) -> list[tuple[str, str]]:
    return [("recipe", f"ViTDet, {d['iterations']} iterations at batch {d['batch_size']}")]


def describe(
    evaluation: str, dataset: str, sections: dict, base: str | None = None
) -> list[tuple[str, str]]:
    """(field, text) pairs of the protocol that ``sections`` (an evaluation's config
    sections) give ``evaluation`` on ``dataset``, for a row whose base method is ``base``."""
    lc = sections.get("linear")
    if evaluation == "linear":
        out = _linear(lc, base)
        if dataset in ("imagenet_c", "imagenet_p"):
            out += _robustness(sections["robustness"], lc)
        if dataset == "3diebench":  # its own probe on the linear probe's features
            out = [out[0], *_iebench(sections["iebench"])]
        return out
    own = {
        "knn": _knn,
        "mlp": _mlp,
        "finetune": _finetune,
        "equivariance": _equivariance,
        "transform_probe": _transform_probe,
        "detection": _detection,
    }.get(evaluation)
    if own is None:
        return []
    return own(sections[evaluation])


def line(fields: list[tuple[str, str]]) -> str:
    return ", ".join(text for _, text in fields)
