"""``harness import`` / ``harness export``: published checkpoint layouts in, timm out.

Each format's file is built here in exactly its public key layout (facebookresearch/dino
``vision_transformer.py`` and ``main_dino.py``; facebookresearch/moco-v3 ``vits.py`` and
``main_moco.py``; timm's ``VisionTransformer``; the public SER code's ``vision_transformer.py``
and ``main_moco.py``; a harness ``checkpoint.pt``) with random weights at a small width, and
the imported backbone's linear-probe features are compared with a reference model built
independently from the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from harness import config as C
from harness.checkpoints.exchange import import_checkpoint
from harness.checkpoints.layouts import load_backbone
from harness.cli import main
from harness.config import load_trained
from harness.errors import HarnessError

WIDTH, HEADS, PATCH, IMG, DEPTH = 48, 3, 16, 64, 4
N_LAST = 4  # the linear probe's feature: final-LN [CLS] of the last 4 blocks


def vit_tensors(seed: int, depth: int = DEPTH, n_pos: int = 1 + (IMG // PATCH) ** 2, equiv=False):
    """Random weights under timm's / DINO's / SER's ViT names (they share them)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.1: torch.randn(*s, generator=g) * scale  # noqa: E731
    d, h = WIDTH, 4 * WIDTH
    sd = {
        "cls_token": r(1, 1, d, scale=1.0),
        "pos_embed": r(1, n_pos, d, scale=0.5),
        "patch_embed.proj.weight": r(d, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": r(d),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update(
            {
                p + "norm1.weight": 1 + r(d),
                p + "norm1.bias": r(d),
                p + "attn.qkv.weight": r(3 * d, d, scale=0.15),
                p + "attn.qkv.bias": r(3 * d),
                p + "attn.proj.weight": r(d, d, scale=0.15),
                p + "attn.proj.bias": r(d),
                p + "norm2.weight": 1 + r(d),
                p + "norm2.bias": r(d),
                p + "mlp.fc1.weight": r(h, d, scale=0.15),
                p + "mlp.fc1.bias": r(h),
                p + "mlp.fc2.weight": r(d, h, scale=0.1),
                p + "mlp.fc2.bias": r(d),
            }
        )
    sd["norm.weight"], sd["norm.bias"] = 1 + r(d), r(d)
    if equiv:
        sd["norm_equiv.weight"], sd["norm_equiv.bias"] = 1 + r(d), r(d)
    return sd


def head(seed: int, *shapes) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g) for k, s in shapes}


# ---- reference models ------------------------------------------------------------------------


def timm_features(sd: dict, x, heads=HEADS, depth=DEPTH) -> torch.Tensor:
    """timm's VisionTransformer with the same weights: last-N final-LN [CLS], concatenated."""
    vit = VisionTransformer(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=WIDTH,
        depth=depth,
        num_heads=heads,
        num_classes=0,
        qkv_bias=True,
    )
    vit.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
    vit.to(x.dtype).eval()
    with torch.no_grad():
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        outs = []
        for i, blk in enumerate(vit.blocks):
            t = blk(t)
            if i >= depth - N_LAST:
                outs.append(vit.norm(t[:, 0]))
    return torch.cat(outs, dim=-1)


def ser_features(sd: dict, x, cls_layer: int, heads=HEADS, depth=6) -> torch.Tensor:
    """spec/ser.md §2's delayed-[CLS] forward, written out: positional embedding on patch
    tokens only; after block ``cls_layer`` the [CLS] (no positional embedding) is prepended."""
    d, sd = WIDTH, {k: v.to(x.dtype) for k, v in sd.items()}
    ln = lambda t, n: F.layer_norm(t, (d,), sd[n + ".weight"], sd[n + ".bias"], 1e-6)  # noqa: E731
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    t = t.flatten(2).transpose(1, 2) + sd["pos_embed"]
    b = t.shape[0]
    outs = []
    with torch.no_grad():
        for i in range(depth):
            p = f"blocks.{i}."
            y = ln(t, p + "norm1")
            n = y.shape[1]
            qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
            q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1)
            y = (a @ v).transpose(1, 2).reshape(b, n, d)
            t = t + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
            y = F.linear(ln(t, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
            t = t + F.linear(F.gelu(y), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
            if i + 1 == cls_layer:
                t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1)
            if i >= depth - N_LAST:
                outs.append(ln(t[:, 0], "norm"))
    return torch.cat(outs, dim=-1)


# ---- the formats' files ----------------------------------------------------------------------


def dino_released(mutate=lambda sd: sd):
    """dino_deitsmall16_pretrain.pth: the teacher backbone's state dict, nothing else."""
    sd = mutate(vit_tensors(1))
    return sd, sd, {}


def dino_full(mutate=lambda sd: sd):
    """main_dino.py's checkpoint: student (DDP: module.backbone./module.head.), teacher
    (backbone./head.), optimizer, epoch, args, dino_loss."""
    teacher, student = mutate(vit_tensors(2)), vit_tensors(3)
    head_shapes = [("mlp.0.weight", (64, WIDTH)), ("mlp.0.bias", (64,)),
                   ("last_layer.weight_g", (32, 1)), ("last_layer.weight_v", (32, 16))]  # fmt: skip
    obj = {
        "student": {
            **{f"module.backbone.{k}": v for k, v in student.items()},
            **{f"module.head.{k}": v for k, v in head(4, *head_shapes).items()},
        },
        "teacher": {
            **{f"backbone.{k}": v for k, v in teacher.items()},
            **{f"head.{k}": v for k, v in head(5, *head_shapes).items()},
        },
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
        "dino_loss": {"center": torch.zeros(1, 32)},
    }
    return obj, teacher, {"student": student}


def moco_v3(mutate=lambda sd: sd):
    """main_moco.py's checkpoint: state_dict with module.base_encoder. / module.momentum_encoder.
    (timm ViTs whose head is the projector, fixed sin-cos pos_embed with a zero [CLS] slot) and
    module.predictor."""
    from harness.model.backbone import sincos_2d

    base, momentum = vit_tensors(6), vit_tensors(7)
    for sd in (base, momentum):
        grid = (IMG // PATCH, IMG // PATCH)
        sd["pos_embed"] = torch.cat([torch.zeros(1, 1, WIDTH), sincos_2d(grid, WIDTH)], dim=1)
    base = mutate(base)
    proj = [("head.0.weight", (64, WIDTH)), ("head.1.weight", (64,)), ("head.1.bias", (64,)),
            ("head.1.running_mean", (64,)), ("head.3.weight", (32, 64))]  # fmt: skip
    state = {
        **{f"module.base_encoder.{k}": v for k, v in base.items()},
        **{f"module.base_encoder.{k}": v for k, v in head(8, *proj).items()},
        **{f"module.momentum_encoder.{k}": v for k, v in momentum.items()},
        **{f"module.momentum_encoder.{k}": v for k, v in head(9, *proj).items()},
        **{
            f"module.predictor.{k}": v
            for k, v in head(10, ("0.weight", (64, 32)), ("3.weight", (32, 64))).items()
        },
    }
    obj = {"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": {}, "scaler": {}}
    return obj, base, {"momentum": momentum}


def timm_sd(mutate=lambda sd: sd):
    """timm's vit_small_patch16_224-style state dict with its classifier head."""
    sd = mutate(vit_tensors(11))
    return {**sd, **head(12, ("head.weight", (10, WIDTH)), ("head.bias", (10,)))}, sd, {}


SER_LAYER = 2


def ser(mutate=lambda sd: sd):
    """The public SER code's main_moco.py save_dict: student/teacher state dicts of its
    vision_transformer.py in SER mode (pos_embed: one entry per patch, norm_equiv), heads as
    modules, projector_equiv, optimizer, scaler, loss lists, args (equiv_layer, equiv_mode)."""
    n = (IMG // PATCH) ** 2
    teacher = mutate(vit_tensors(13, depth=6, n_pos=n, equiv=True))
    student = vit_tensors(14, depth=6, n_pos=n, equiv=True)
    obj = {
        "epoch": 100,
        "args": argparse.Namespace(equiv_layer=SER_LAYER, equiv_mode="erl", arch="vit_small"),
        "student": student,
        "student_head": torch.nn.Linear(WIDTH, 8),
        "teacher": teacher,
        "teacher_head": torch.nn.Linear(WIDTH, 8),
        "projector_equiv": {"0.weight": torch.zeros(8, WIDTH)},
        "optimizer": {"state": {}},
        "scaler": {"scale": 1.0},
        "loss_list_inv": np.zeros(3),
        "loss_list_equiv": np.zeros(3),
    }
    return obj, teacher, {"student": student}


LAYOUTS = {
    "dino": dino_released,
    "dino_full": dino_full,
    "moco_v3": moco_v3,
    "timm": timm_sd,
    "ser": ser,
}
FORMAT = {"dino_full": "dino"}
OPTIONS = {"moco_v3": []}  # MoCo-v3's 12 heads are the format's default


def reference(layout: str, sd: dict, x):
    if layout == "ser":
        return ser_features(sd, x, SER_LAYER)
    return timm_features(sd, x, heads=12 if layout == "moco_v3" else HEADS)


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imported_features_equal_the_reference_model(layout, tmp_path, x):
    obj, weights, _ = LAYOUTS[layout]()
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    fmt = FORMAT.get(layout, layout)
    run_dir, written = import_checkpoint(
        "imp", path, fmt, OPTIONS.get(layout, ["model.heads=3"]), tmp_path / "res"
    )
    assert written
    with torch.no_grad():
        # In float64 on both sides, so 1e-6 tests the math, not float32 rounding order.
        got = load_trained(run_dir).eval_backbone().double().features(x.double(), n_last=N_LAST)
    want = reference(layout, weights, x.double())
    assert got.shape == (3, N_LAST * WIDTH)
    assert (got - want).abs().max().item() < 1e-6
    # Every key of the file is accounted for: loaded, or skipped with a reason.
    keys = json.loads((run_dir / "import.json").read_text())
    assert len(keys["loaded"]) == len(load_trained(run_dir).eval_backbone().state_dict())
    assert all(keys["skipped"].values())
    # Read-only files, marked imported with the source's sha256.
    for f in ("checkpoint.pt", "config.yaml", "pretrain.json", "import.json"):
        assert not os.stat(run_dir / f).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    cfg = json.loads((run_dir / "pretrain.json").read_text())["imported"]
    import hashlib

    assert cfg["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cfg["format"] == fmt and cfg["source"] == str(path.resolve())


@pytest.mark.parametrize(
    "layout,option,other",
    [
        ("dino_full", "branch=student", "student"),
        ("moco_v3", "encoder=momentum", "momentum"),
        ("ser", "branch=student", "student"),
    ],  # fmt: skip
)
def test_the_other_branch_is_imported_on_request(layout, option, other, tmp_path, x):
    obj, teacher, others = LAYOUTS[layout]()
    path = tmp_path / "f.pth"
    torch.save(obj, path)
    heads = [] if layout == "moco_v3" else ["model.heads=3"]
    x = x.double()
    got = load_backbone(path, FORMAT.get(layout, layout), [option, *heads]).double().features(x)
    want = reference(layout, others[other], x)
    assert (got - want).abs().max().item() < 1e-6
    assert (got - reference(layout, teacher, x)).abs().max().item() > 1e-3


def _extra(sd):
    return {**sd, "blocks.0.attn.q_norm.weight": torch.ones(WIDTH // HEADS)}


def _missing(sd):
    return {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}


def _misshaped(sd):
    return {**sd, "blocks.1.mlp.fc2.bias": torch.zeros(WIDTH + 1)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "mutate,key,words",
    [
        (_extra, "blocks.0.attn.q_norm.weight", "unexpected key"),
        (_missing, "blocks.1.mlp.fc2.bias", "missing"),
        (_misshaped, "blocks.1.mlp.fc2.bias", "has shape (49,)"),
    ],
)
def test_an_extra_missing_or_misshaped_key_is_one_line(layout, mutate, key, words, tmp_path):
    obj, _, _ = LAYOUTS[layout](mutate)
    path = tmp_path / "bad.pth"
    torch.save(obj, path)
    with pytest.raises(HarnessError) as e:
        import_checkpoint(
            "bad", path, FORMAT.get(layout, layout), ["model.heads=3"], tmp_path / "res"
        )
    msg = str(e.value)
    assert "\n" not in msg and key in msg and words in msg, msg
    assert not (tmp_path / "res" / "runs" / "bad").exists()  # never a partial import


# ---- the harness format ----------------------------------------------------------------------


def harness_checkpoint(path, mutate=lambda sd: sd):
    from harness import config as C
    from harness.config import build_method

    cfg = C.resolve("moco_v3+ser", "micro", overrides=["model.depth=4"])
    torch.manual_seed(0)
    method = build_method(cfg)
    state = method.state_dict()
    pre = "backbone.vit."
    inner = mutate({k[len(pre) :]: v for k, v in state.items() if k.startswith(pre)})
    state = {k: v for k, v in state.items() if not k.startswith(pre)}
    state.update({pre + k: v for k, v in inner.items()})
    torch.save({"step": 3, "model": state, "config": cfg, "optimizer": {}}, path)
    return method.eval_backbone().eval()


def test_harness_checkpoint_imports_its_evaluated_backbone(tmp_path):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    want_backbone = harness_checkpoint(tmp_path / "checkpoint.pt")
    run_dir, _ = import_checkpoint("h", tmp_path / "checkpoint.pt", "harness", (), tmp_path / "r")
    got = load_trained(run_dir).eval_backbone()
    assert got.cfg == want_backbone.cfg and got.cfg.cls_layer is not None  # SER layout kept
    assert (got.features(x) - want_backbone.features(x)).abs().max().item() < 1e-6
    for mutate, key in ((_extra, "q_norm"), (_missing, "mlp.fc2.bias"), (_misshaped, "fc2")):
        harness_checkpoint(tmp_path / "bad.pt", mutate)
        with pytest.raises(HarnessError) as e:
            import_checkpoint("hb", tmp_path / "bad.pt", "harness", (), tmp_path / "r")
        assert "\n" not in str(e.value) and key in str(e.value), str(e.value)


# ---- import records --------------------------------------------------------------------------


def test_reimport_is_a_noop_and_another_file_is_refused(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(timm_sd()[0], a)
    torch.save(dino_released()[0], b)
    res = tmp_path / "res"
    run_dir, written = import_checkpoint("x", a, "timm", ["model.heads=3"], res)
    before = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    assert written
    assert import_checkpoint("x", a, "timm", ["model.heads=3"], res) == (run_dir, False)
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == before
    with pytest.raises(HarnessError, match="already the import of"):
        import_checkpoint("x", b, "timm", ["model.heads=3"], res)
    with pytest.raises(HarnessError, match="is a method name"):
        import_checkpoint("moco_v3", a, "timm", ["model.heads=3"], res)
    with pytest.raises(HarnessError, match="model.heads=N"):
        import_checkpoint("y", a, "timm", [], res)  # 48 wide: the heads cannot be assumed
    with pytest.raises(HarnessError, match="unknown option 'branch' for format timm"):
        import_checkpoint("y", a, "timm", ["branch=student"], res)


def test_ser_without_args_needs_the_cls_layer(tmp_path, x):
    obj, teacher, _ = ser()
    path = tmp_path / "bare.pth"
    torch.save(teacher, path)  # the state dict alone: no args to read equiv_layer from
    with pytest.raises(HarnessError, match="model.cls_layer=K"):
        load_backbone(path, "ser", ["model.heads=3"])
    got = load_backbone(path, "ser", ["model.heads=3", f"model.cls_layer={SER_LAYER}"]).double()
    x = x.double()
    assert (got.features(x) - ser_features(teacher, x, SER_LAYER)).abs().max().item() < 1e-6


# ---- CLI: import, table rows, published reference, export ------------------------------------


def test_import_run_table3_report_and_export_round_trip(micro_data, tmp_path, capsys):
    res, _ = micro_data
    res = str(res)
    # The released DINO file's name: its published numbers become the row's reference.
    img, patch = 16, 4
    vit = VisionTransformer(img_size=img, patch_size=patch, embed_dim=WIDTH, depth=DEPTH,
                            num_heads=HEADS, num_classes=0)  # fmt: skip
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(vit.state_dict(), path)
    argv = ["import", "dino_official", str(path), "--format", "dino", "--results", res]
    assert main([*argv, "model.heads=3"]) == 0
    assert "already imported" not in capsys.readouterr().out
    assert main([*argv, "model.heads=3"]) == 0
    assert "already imported" in capsys.readouterr().out

    run = ["--preset", "micro", "--results", res]
    assert main(["run", "table3", "--methods", "dino_official", "--cluster", "debug", *run]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["submitted"] == 3  # evaluations only
    assert main(["report", "table3", "--methods", "dino_official", *run]) == 0
    import pandas as pd

    out = pd.read_csv(f"{res}/report/micro/table3.csv")
    assert set(out.method) == {"dino_official"} and out.value.notna().all()
    knn = out[out.metric == "knn20_top1"].iloc[0]
    assert knn.paper == 74.5 and abs(knn.delta - (knn.value - 74.5)) < 1e-6
    with open(f"{res}/report/micro/table3.md") as f:
        assert "published figures (dino_official: dino_vits16)" in f.read()

    # Export to timm, load it in timm: the same features as the imported run.
    exported = tmp_path / "out.pth"
    assert main(["export", "dino_official", "--format", "timm", "--out", str(exported),
                 "--results", res]) == 0  # fmt: skip
    kwargs = json.loads((tmp_path / "out.pth.json").read_text())["timm_VisionTransformer_kwargs"]
    back = VisionTransformer(**kwargs)
    back.load_state_dict(torch.load(exported))
    xs = torch.randn(2, 3, img, img)
    ours = load_trained(f"{res}/runs/dino_official").eval_backbone()
    with torch.no_grad():
        feats = ours.features(xs, n_last=1)
        assert torch.equal(back.eval().forward_features(xs)[:, 0], feats)
    # ... and back in through a NAME=import:PATH row: identical features again.
    rows = f"roundtrip=import:{exported}"
    assert main(["run", "table3", "--methods", rows, "--cluster", "debug", *run]) == 0
    again = load_trained(f"{res}/runs/roundtrip").eval_backbone()
    assert torch.equal(again.features(xs), ours.features(xs))
    x32 = torch.randn(2, 3, 32, 32)  # off the native grid: the same positional interpolation
    assert torch.equal(again.features(x32), ours.features(x32))
    with open(f"{res}/runs/roundtrip/pretrain.json") as f:
        imported = json.load(f)["imported"]
    assert imported["format"] == "timm" and imported["published"] is None


def test_cli_errors_are_one_line(tmp_path, capsys):
    res = str(tmp_path)
    assert (
        main(["import", "a", str(tmp_path / "nope.pth"), "--format", "timm", "--results", res]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    argv = ["run", "table3", "--preset", "micro", "--results", res, "--methods"]
    assert main([*argv, "nothing_imported"]) == 2
    assert "unknown base method" in capsys.readouterr().err
    assert main([*argv, "x=import:"]) == 2
    assert "NAME=import:PATH" in capsys.readouterr().err
    assert main(["export", "nowhere", "--format", "timm", "--results", res]) == 2
    assert "no run 'nowhere'" in capsys.readouterr().err


def test_an_imported_row_plans_only_evaluations_keyed_by_preset(tmp_path):
    from dataclasses import replace

    import tables
    from harness.run import jobs

    path = tmp_path / "t.pth"
    torch.save(timm_sd()[0], path)
    res = tmp_path / "res"
    run_dir, _ = import_checkpoint("mine", path, "timm", ["model.heads=3"], res)
    spec = replace(tables.load("table3"), rows=("mine", "moco_v3"))
    plans = {p: jobs.plan(spec, p, res) for p in ("micro", "tiny")}
    for preset, plan in plans.items():
        mine = [j for j in plan if j.cfg["method"] == "mine"]
        assert [j.kind for j in mine] == ["eval"] * 3  # pretraining is done: the import
        assert all(Path(j.run_dir) == run_dir.resolve() and j.deps for j in mine)
        assert all(Path(d).exists() for j in mine for d in j.deps)
        cfg = mine[0].cfg
        assert cfg["imported"]["name"] == "mine" and cfg["model"]["width"] == WIDTH
        # Evaluated at the preset's image size, with the checkpoint's own architecture.
        assert cfg["model"]["img_size"] == C.resolve("moco_v3", preset)["model"]["img_size"]
        assert [j.kind for j in plan if j.cfg["method"] == "moco_v3"][0] == "pretrain"
    # One folder serves every preset: the results of two presets never share a file.
    results = [{j.result for j in plan if j.cfg["method"] == "mine"} for plan in plans.values()]
    assert not results[0] & results[1]
