"""Two gloo processes, each holding half of one global batch, give what one process gives
on the whole batch, for MoCo-v3, DINO and Barlow Twins, each ± SER (spec/ser.md §6).

Compared after one training step: every loss term and the total, every parameter's gradient
after ``dist.average_gradients`` (and, with SER, the gradient of L_equiv alone), and every
buffer (the BatchNorms' running statistics, updated with global-batch statistics).

A rank's loss term is averaged over ranks: MoCo-v3's cross-entropy over local queries
against all keys, DINO's mean over local images and SER's InfoNCE over local queries average
to the global means (equal shards), and Barlow Twins gives the same global value on every
rank, whose mean is itself.

"Relative" is per tensor: ||two − one|| / max(||one||, TINY) ≤ 1e-5. Model and batch are
float64, so reduction-order noise (~1e-15; ~1e-7 on pos_embed, which timm resamples in
float32 for SER's rescaled crops) sits far below the bound and a real mismatch (per-rank
BatchNorm statistics, a lost cross-rank gradient: ~1e-2) far above it. TINY = 1e-6 covers
tensors that are 0 in exact arithmetic and float64 noise (≤1e-14) here: the final
LayerNorm's bias gradient (a BatchNorm follows and removes any shift) and the running mean
of MoCo-v3's predictor BatchNorm (fed a zero-mean input); for them the bound is 1e-11.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness import config as C
from harness.instruments.audit import audit, random_batch, shard_batch
from harness.parallel import dist as hdist
from harness.parallel.global_bn import convert_global_batchnorm, global_batchnorm
from harness.schedule import Progress
from tests.helpers import free_port

NAMES = ["moco_v3", "dino", "barlow_twins", "moco_v3+ser", "dino+ser", "barlow_twins+ser"]
WORLD, REL, TINY = 2, 1e-5, 1e-6
ROOT = Path(__file__).resolve().parents[2]


def _double(x):
    if isinstance(x, torch.Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _double(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_double(v) for v in x)
    return x


def _setup(name):
    cfg = C.resolve(name, "micro")
    cfg["model"]["drop_path"] = 0.0  # stochastic depth draws differ per process
    torch.manual_seed(0)
    m = C.build_method(cfg).double().train()
    return m, _double(random_batch(m, cfg, seed=3, world=WORLD))


def _step(m, batch):
    """One training step's terms and gradients, as harness.train computes them."""
    terms = m.training_step(batch, Progress(0, 1, 1))
    out = {"terms": {k: v.detach() for k, v in terms.items()}}
    params = [p for p in m.parameters() if p.requires_grad]
    if "loss_equiv" in terms:
        # L_equiv alone: where it reaches in the multi-process run.
        g = torch.autograd.grad(terms["loss_equiv"], params, retain_graph=True, allow_unused=True)
        names = [n for n, p in m.named_parameters() if p.requires_grad]
        out["equiv_grads"] = {}
        for n, x in zip(names, g):
            if x is not None:
                out["equiv_grads"][n] = hdist.all_reduce_mean(x)
    loss = sum(terms.values())
    m.zero_grad()
    loss.backward()
    hdist.average_gradients(m.trainable_parameters())
    out["terms"]["loss"] = loss.detach()
    out["terms"] = {k: hdist.all_reduce_mean(v) for k, v in out["terms"].items()}
    out["grads"] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    out["buffers"] = {n: b.clone() for n, b in m.named_buffers()}
    return out


# BatchNorms the specs do not use but GlobalBatchNorm must handle as torch does: token
# inputs (N×C×L), maps (N×C×H×W), momentum=None (cumulative average), no affine, and
# unequal shards (rank r holds SPLIT[r] of the 8 rows).
BN_CASES = [
    (torch.nn.BatchNorm1d, {"num_features": 5}, (8, 5)),
    (torch.nn.BatchNorm1d, {"num_features": 5, "momentum": None}, (8, 5, 3)),
    (torch.nn.BatchNorm2d, {"num_features": 4, "affine": False}, (8, 4, 3, 3)),
]
SPLIT = (3, 5)


def _bn_errors(rank) -> torch.Tensor:
    """Per case, the worst relative error of outputs, input and parameter gradients and
    buffers over two training steps and one eval step, GlobalBatchNorm on this rank's rows
    against torch's BatchNorm on all rows."""
    rows = slice(sum(SPLIT[:rank]), sum(SPLIT[: rank + 1]))
    errs = []
    for i, (cls, kw, shape) in enumerate(BN_CASES):
        ref = cls(**kw).double()
        if ref.affine:
            torch.nn.init.normal_(ref.weight, generator=torch.Generator().manual_seed(i))
            torch.nn.init.normal_(ref.bias, generator=torch.Generator().manual_seed(i + 9))
        ours = convert_global_batchnorm(cls(**kw).double())
        ours.load_state_dict(ref.state_dict())
        gen, worst = torch.Generator().manual_seed(i), 0.0
        for step in range(3):
            x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2  # |mean| > std
            w = torch.randn(shape, generator=gen, dtype=torch.float64)
            ref.train(step < 2), ours.train(step < 2)
            xr, xo = x.clone().requires_grad_(), x[rows].clone().requires_grad_()
            yr, yo = ref(xr), ours(xo)
            (yr * w).sum().backward()
            (yo * w[rows]).sum().backward()
            pairs = [(yo, yr[rows]), (xo.grad, xr.grad[rows])]
            # Each rank holds its rows' share of a parameter's gradient: their sum is the whole.
            pairs += [
                (hdist.all_reduce_sum(p.grad), q.grad)
                for p, q in zip(ours.parameters(), ref.parameters())
            ]
            pairs += [(b, c) for b, c in zip(ours.buffers(), ref.buffers())]
            worst = max([worst] + [_rel(a.detach(), b.detach()) for a, b in pairs])
            ref.zero_grad(), ours.zero_grad()
        errs.append(worst)
    errs = torch.tensor(errs, dtype=torch.float64)
    dist.all_reduce(errs, op=dist.ReduceOp.MAX)
    return errs


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # Every rank builds the same model and global batch, then keeps its shard.
    setups = {name: _setup(name) for name in NAMES}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res = {}
        for name, (m, batch) in setups.items():
            m = global_batchnorm(m, torch.device("cpu"))  # what harness.train does
            res[name] = _step(m, shard_batch(batch, rank, world))
        res["bn_cases"] = _bn_errors(rank)
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "two.pt"
    mp.spawn(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=False)


def _rel(two: torch.Tensor, one: torch.Tensor) -> float:
    return float((two.double() - one.double()).norm() / max(float(one.double().norm()), TINY))


def _assert_close(two: dict, one: dict, what: str) -> float:
    assert two.keys() == one.keys(), what
    worst = 0.0
    for k in one:
        r = _rel(two[k], one[k])
        assert r <= REL, f"{what} {k}: relative error {r:.3g}"
        worst = max(worst, r)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_two_processes_match_one(name, two_processes):
    two = two_processes[name]
    one = _step(*_setup(name))
    errs = {w: _assert_close(two[w], one[w], w) for w in ("terms", "grads", "buffers")}
    print(f"{name}: max relative error " + ", ".join(f"{w} {e:.2g}" for w, e in errs.items()))
    assert any("running_mean" in k for k in one["buffers"]) == (not name.startswith("dino"))
    if "+ser" in name:
        _assert_close(two["equiv_grads"], one["equiv_grads"], "L_equiv grads")
        # L_equiv alone reaches f1 and SER's projector in the two-process run too.
        eq = two["equiv_grads"]
        assert eq["backbone.vit.blocks.0.attn.qkv.weight"].abs().sum() > 0
        assert any(k.startswith("addons.0.projector") for k in eq)
        assert not any(k.startswith("backbone.vit.blocks.3.") for k in eq)


def test_global_batchnorm_matches_batchnorm_on_the_whole_batch(two_processes):
    errs = two_processes["bn_cases"]
    print("GlobalBatchNorm cases: max relative error", [f"{e:.2g}" for e in errs.tolist()])
    assert (errs <= REL).all(), errs


@pytest.mark.slow
def test_torchrun_audit_matches_one_process():
    """``torchrun --nproc_per_node 2 -m harness.cli audit`` under gloo: rank 0 prints the
    one-process audit of the same global batch; L_equiv stops at SER's layer 3."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(WORLD),
        "--master-port",
        str(free_port()),
        "-m",
        "harness.cli",
        "audit",
        "moco_v3+ser",
        "--preset",
        "micro",
        "--json",
    ]
    p = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads(p.stdout)  # one JSON document: only rank 0 prints
    eq = two["terms"]["loss_equiv"]
    assert all(eq[f"blocks.{i}"] > 0 for i in range(3))
    assert all(eq[f"blocks.{i}"] == 0.0 for i in range(3, 12))
    assert eq["ser.projector"] > 0 and two["terms"]["loss_inv"]["blocks.11"] > 0
    one = audit("moco_v3+ser", "micro")
    for term, norms in one["terms"].items():
        for g, v in norms.items():
            # float32 here: two ranks sum in another order than one process.
            assert two["terms"][term][g] == pytest.approx(v, rel=1e-4, abs=1e-12), (term, g)
