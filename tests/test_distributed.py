"""SER's gradient-preserving gather: two gloo processes on halves of a batch give the loss
and the gradients one process gives on the whole batch (spec/ser.md §6)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness import config as C
from harness import dist as hdist
from harness.instruments import random_batch
from methods.base import Progress

NAMES = ["moco_v3+ser", "dino+ser", "barlow_twins+ser"]


def _setup(name):
    cfg = C.resolve(name, "micro")
    cfg["model"]["drop_path"] = 0.0   # stochastic depth draws differ per process
    torch.manual_seed(0)
    m = C.build_method(cfg).train()
    return m, random_batch(m, cfg, seed=3)


def _half(batch, rank, world):
    def cut(x):
        n = len(x) // world
        return x[rank * n:(rank + 1) * n]
    eq = batch["equiv"]
    pairs = [(a, b, cut(ga), cut(gb)) for a, b, ga, gb in eq["pairs"]]
    return {"views": [[cut(x) for x in v] for v in batch["views"]],
            "equiv": {"pairs": pairs, "chunk": eq["chunk"]}}


def _equiv_grads(m, batch):
    loss = m.training_step(batch, Progress(0, 1, 1))["loss_equiv"]
    m.zero_grad()
    loss.backward()
    hdist.average_gradients(m.trainable_parameters())
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _worker(rank, world, port, name, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    m, batch = _setup(name)   # every rank builds the same global batch, then keeps its half
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loss, grads = _equiv_grads(m, _half(batch, rank, world))
        dist.all_reduce(loss)
        if rank == 0:
            torch.save({"loss": loss / world, "grads": grads}, out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_match_one(name, tmp_path):
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(2, _free_port(), name, str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    m, batch = _setup(name)
    loss, grads = _equiv_grads(m, batch)
    assert float(two["loss"]) == pytest.approx(float(loss), rel=1e-5)
    assert grads.keys() == two["grads"].keys()
    assert any(k.startswith("backbone.vit.blocks.0.") for k in grads)
    for k, g in grads.items():
        assert torch.allclose(two["grads"][k], g, rtol=1e-4, atol=1e-7), k
    # L_equiv alone reaches f1 in the two-process run too.
    assert two["grads"]["backbone.vit.blocks.0.attn.qkv.weight"].abs().sum() > 0
    assert any(k.startswith("addons.0.projector") for k in two["grads"])
