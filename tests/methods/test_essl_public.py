"""E-SSL on MoCo-v3 computes by default what the public SER code computed, and ``@original``
E-SSL's own values (the harness's version 1).

Reference: aitrics-chris/SER at dbe5e9361953a28258a7f24d92f742a162376c77, ``builder/moco.py``:
``train_essl`` runs ``MoCo.inv`` on the two views, then ``forward_essl`` on the 4B rotated
crops, ``loss = loss_inv + equiv_lambda * cross_entropy(logit_equiv, rotated_labels)`` with
``equiv_lambda`` = 1.0 (``main_moco.py``'s default); ``forward_essl`` is
``projector_equiv(base_encoder.forward_inv(x))``, ``forward_inv`` = ``forward_baseline`` outside
'erl' modes (the online encoder's final-normed [CLS]); ``projector_equiv`` =
Linear(384, 384)-LayerNorm(384)-ReLU-Linear(384, 384)-LayerNorm(384)-ReLU-Linear(384, 256)-
LayerNorm(256)-Linear(256, 4), PyTorch's defaults (bias on, eps 1e-5). The head is
re-implemented below from those formulas, in float64, with the harness's weights copied in.
"""

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from harness import config as C
from harness.errors import HarnessError
from harness.schedule import Progress
from methods.departures import DEPARTURES, measured
from methods.essl import ESSL, head_lambda_effect
from methods.heads import ln_mlp
from methods.registry import parse
from tests.methods.addons import setup as _setup

P0 = Progress(0, 1, 1)


def _ser_projector_equiv(x, linears, norms):
    """SER's projector_equiv, written out: (Linear → LayerNorm → ReLU) ×2, Linear → LayerNorm,
    Linear; LayerNorm with the biased variance and eps 1e-5 (nn.LayerNorm's defaults)."""

    def ln(h, w, b):
        mu = h.mean(dim=-1, keepdim=True)
        var = ((h - mu) ** 2).mean(dim=-1, keepdim=True)
        return (h - mu) / torch.sqrt(var + 1e-5) * w + b

    h = x
    for i, ((w, b), (g, beta)) in enumerate(zip(linears[:3], norms)):
        h = ln(h @ w.t() + b, g, beta)
        if i < 2:
            h = torch.clamp(h, min=0.0)
    w, b = linears[3]
    return h @ w.t() + b


def _ser_ce(logits, labels):
    """F.cross_entropy's default: the mean over all rows of −log softmax at the label."""
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -logp[torch.arange(len(labels)), labels].mean()


def _weights(head):
    """The harness head's parameters, copied out, in SER's layer order."""
    lin = [m for m in head if isinstance(m, nn.Linear)]
    lns = [m for m in head if isinstance(m, nn.LayerNorm)]
    assert len(lin) == 4 and len(lns) == 3 and all(m.bias is not None for m in lin)
    assert all(m.eps == 1e-5 and m.elementwise_affine for m in lns)
    copy = lambda t: t.detach().clone().double()  # noqa: E731
    return [(copy(m.weight), copy(m.bias)) for m in lin], [
        (copy(m.weight), copy(m.bias)) for m in lns
    ]


def _built(name, d=384, factor=1.0):
    """The add-on attached to a stand-in method of backbone width ``d``."""
    _, [(cls, opts)] = parse(name)
    add = cls(name.split("+")[0], **opts)
    add.width_factor = factor
    add.attach(SimpleNamespace(backbone=SimpleNamespace(width=d)))
    return add


def _shapes(head):
    return [tuple(m.weight.shape[::-1]) for m in head if isinstance(m, nn.Linear)]


# ---- the defaults and the modifier ---------------------------------------------------------


def test_default_is_sers_lambda_and_head_and_original_is_essls_own():
    _, [(cls, opts)] = parse("moco_v3+essl")
    assert opts == {} and cls.version == 2 and "@original" in cls.modifier_help
    assert parse("moco_v3+essl@original")[1][0][1] == {"original": True}

    ser = C.build_method(C.resolve("moco_v3+essl", "micro")).addons[0]
    orig = C.build_method(C.resolve("moco_v3+essl@original", "micro")).addons[0]
    assert (ser.lam, ser.original) == (1.0, False)
    assert (orig.lam, orig.original) == (0.4, True)
    cfg = C.resolve("moco_v3+essl@original", "micro")
    assert cfg["versions"]["essl"] == 2 and cfg["addons"][0]["options"]["original"] is True

    # ViT-S: SER's 384-384-256-4; @original E-SSL's 128-wide projection.
    assert _shapes(_built("moco_v3+essl").head) == [(384, 384), (384, 384), (384, 256), (256, 4)]
    assert _shapes(_built("moco_v3+essl@original").head) == [
        (384, 384),
        (384, 384),
        (384, 128),
        (128, 4),
    ]
    # Smaller presets: hidden = backbone width, the projection × the preset's width factor
    # (at least 16), as every head through ``self.width``.
    for preset, d, f in (("tiny", 96, 0.125), ("micro", 32, 0.015625)):
        m = C.build_method(C.resolve("moco_v3+essl", preset))
        assert m.backbone.width == d and m.addons[0].width_factor == f
        w = max(16, round(256 * f))
        assert _shapes(m.addons[0].head) == [(d, d), (d, d), (d, w), (w, 4)]
    tiny = C.build_method(C.resolve("moco_v3+essl@original", "tiny")).addons[0]
    assert _shapes(tiny.head)[2] == (96, 16)


def test_other_bases_take_sers_defaults_and_original_their_e_ssl_values():
    """SER's main_dino.py (--equiv-lambda 0.3) and main_barlowtwins.py (1.0), the same
    256-wide head in builder/dino.py and builder/barlowtwins.py (aitrics-chris/SER dbe5e93)."""
    for base, ser, original in (
        ("dino", (0.3, 256), (0.4, 128)),
        ("barlow_twins", (1.0, 256), (8.0, 256)),
    ):
        for mod, (lam, width) in (("", ser), ("@original", original)):
            add = _built(f"{base}+essl{mod}")
            assert add.lam == lam and _shapes(add.head)[2] == (384, width), (base, mod)
    assert _built("moco_v3+essl@lambda0.7").lam == 0.7
    add = _built("moco_v3+essl@original@lambda0.7")
    assert add.lam == 0.7 and _shapes(add.head)[2] == (384, 128)
    with pytest.raises(HarnessError, match=r"simsiam\+essl@lambda"):
        ESSL("simsiam", original=True)


# ---- the loss against SER's train_essl ------------------------------------------------------


@pytest.mark.parametrize("name,lam", [("moco_v3+essl", 1.0), ("moco_v3+essl@original", 0.4)])
def test_essl_term_is_sers_train_essl_in_float64(name, lam):
    m, batch = _setup(name)
    m = m.double()
    batch["views"] = [[t.double() for t in v] for v in batch["views"]]
    batch["rotated"] = batch["rotated"].double()
    # A momentum encoder unlike the online one: the head must read the online encoder.
    with torch.no_grad():
        for p in m.momentum_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    labels = batch["rot_labels"]
    n = len(labels) // 4
    assert torch.equal(labels, torch.arange(4).repeat_interleave(n))

    with torch.no_grad():
        cls = m.encode_views(m.backbone, [[batch["rotated"]]], set())[0].cls
    linears, norms = _weights(m.addons[0].head)
    ref = lam * _ser_ce(_ser_projector_equiv(cls, linears, norms), labels)

    terms = m.training_step(batch, P0)
    assert set(terms) == {"loss_inv", "loss_essl"}
    assert terms["loss_essl"].dtype == torch.float64
    assert abs(terms["loss_essl"].item() - ref.item()) <= 1e-6
    # loss = loss_inv + equiv_lambda · CE: added once, no ×2, no mean over views.
    total = sum(terms.values())
    assert abs(total.item() - (terms["loss_inv"] + ref).item()) <= 1e-6
    # Not the pooled token map: the [CLS] is what SER's forward_baseline returns.
    tokens = m.encode_views(m.backbone, [[batch["rotated"]]], {m.backbone.cfg.depth})[0]
    if tokens.tokens[0]:
        pooled = next(iter(tokens.tokens[0].values())).mean(dim=(2, 3))
        other = lam * _ser_ce(_ser_projector_equiv(pooled, linears, norms), labels)
        assert abs(other.item() - ref.item()) > 1e-4


def test_head_reimplementation_agrees_on_fixed_tensors():
    g = torch.Generator().manual_seed(3)
    head = _built("moco_v3+essl").head.double()
    with torch.no_grad():
        for p in head.parameters():  # away from the init (LN weight 1, bias 0)
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(32, 384, generator=g, dtype=torch.float64)
    got = head(x)
    ref = _ser_projector_equiv(x, *_weights(head))
    assert (got - ref).abs().max().item() <= 1e-6


# ---- the departure's measured effect ------------------------------------------------------


def _head_params(d, w):
    return 2 * (d * d + d) + 2 * (2 * d) + (d * w + w) + 2 * w + (4 * w + 4)


def test_departure_measures_the_term_and_the_head():
    line = head_lambda_effect()
    ratio, orig, ser, diff, n_orig, n_ser = (
        float(x.replace(",", ""))
        for x in re.findall(r"[-+]?[\d,]*\.?\d+", line.replace("ViT-S", ""))
    )
    assert n_ser == _head_params(384, 256) == 397316
    assert n_orig == _head_params(384, 128) == 347268
    assert diff == n_orig - n_ser == -50048
    assert ratio == pytest.approx(orig / ser, abs=2e-3)
    # The default's number is SER's term on the function's fixed tensors, re-computed here.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = ln_mlp(384, 384, 256, 4).double()
        feats = torch.randn(64, 384, dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(16)
    ref = 1.0 * _ser_ce(_ser_projector_equiv(feats, *_weights(head)), labels)
    assert ser == pytest.approx(ref.item(), abs=1e-4)
    # λ dominates: at init both heads' CE sit near ln 4, so the ratio is ≈ 0.4.
    assert 0.36 < ratio < 0.44
    entry = next(d for d in DEPARTURES if d.key == "essl-head-lambda")
    assert entry.other == "+essl@original" and entry.measure == "methods.essl:head_lambda_effect"
    assert measured(entry) == line
