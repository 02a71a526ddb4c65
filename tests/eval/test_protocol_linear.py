"""The linear probe as SER's lincls_parallel.py + run_eval.sh + config/eval.yaml
(aitrics-chris/SER@dbe5e93) run it: one head per base lr on one feature stream, selection of
the best (lr, epoch) after ``--val_epoch``, fp16 autocast without a gradient scaler."""

import copy

import pytest
import torch
import torch.nn as nn

from harness import config as C
from harness.eval.imagenet_head import base_lrs, heldout_split
from harness.eval.sweep import probe_head, train_sweep


def _data(n=96, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, d, generator=g) + 2.0 * nn.functional.one_hot(y, d).float()
    return x, y


def _batches(x, y, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    calls = []

    def epoch_batches(epoch):
        calls.append(epoch)
        for idx in torch.randperm(len(x), generator=g).split(batch):
            yield x[idx], y[idx]

    return epoch_batches, calls


def _ser_selection(scores, val_epoch):
    """SER's loop: per head ``if acc1 > best_acc1`` (best_acc1 starts at 0) from epoch index
    ``val_epoch`` on; then the head with the highest best, the first on a tie."""
    n_heads, epochs = len(scores), len(scores[0])
    best = [(0.0, None)] * n_heads
    for epoch in range(epochs):
        if epoch >= val_epoch:
            for i in range(n_heads):
                if scores[i][epoch] > best[i][0]:
                    best[i] = (scores[i][epoch], epoch + 1)
    pick = max(range(n_heads), key=lambda i: (best[i][0], -i))
    return pick, best[pick][1], best[pick][0]


@pytest.mark.parametrize(
    "scores",
    [
        # head 0 peaks at epoch 5, head 1 at epoch 4 higher: head 1, epoch 4
        [[10, 20, 30, 31, 35, 36], [50, 60, 90, 95, 91, 94]],
        # a tie between the heads' bests: the first lr; a later equal score keeps the earlier
        [[1, 1, 1, 40, 40, 39], [1, 1, 1, 30, 40, 40]],
        # the best score before val_epoch does not count
        [[99, 99, 99, 10, 11, 12], [0, 0, 98, 13, 12, 14]],
    ],
)
def test_selection_is_sers_rule(scores):
    x, y = _data()
    batches, _ = _batches(x, y, 32)
    snaps = []  # (head index, epoch) -> state at the call

    calls = {"n": 0}

    def score(head):
        i, epoch = calls["n"] % 2, 3 + calls["n"] // 2
        calls["n"] += 1
        snaps.append(((i, epoch + 1), copy.deepcopy(head.state_dict())))
        return scores[i][epoch]

    head, rec = train_sweep(batches, 12, 4, 6, 32, [0.5, 2.0], 3, score)
    pick, epoch, top1 = _ser_selection(scores, 3)
    assert (rec["lr"], rec["epoch"], rec["top1"]) == ([0.5, 2.0][pick], epoch, top1)
    want = dict(snaps)[(pick, epoch)]
    for k, v in head.state_dict().items():
        assert torch.equal(v, want[k])
    assert [r["lr"] for r in rec["per_lr"]] == [0.5, 2.0]


def test_one_feature_pass_feeds_every_head_from_one_init():
    x, y = _data()
    batches, calls = _batches(x, y, 32)
    seen = []

    def score(head):
        seen.append(copy.deepcopy(head.state_dict()))
        return 50.0

    train_sweep(batches, 12, 4, 4, 32, [1.0, 1.0], 3, score)
    assert calls == [0, 1, 2, 3]  # one pass per epoch, not one per head
    # Same seed, same lr: the two heads saw the same batches and stayed identical.
    assert all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0])
    a, b = probe_head(12, 4, 7), probe_head(12, 4, 7)
    assert torch.equal(a.weight, b.weight) and abs(a.weight.std().item() - 0.01) < 0.003
    assert torch.count_nonzero(a.bias) == 0


def _ser_train(x, y, batch, base_lr, epochs, precision, seed=0):
    """SER's training step re-implemented: autocast around forward and loss, plain
    backward and step (the GradScaler lines are commented out), cosine per epoch."""
    head = probe_head(x.shape[1], 4, seed)
    opt = torch.optim.SGD(head.parameters(), lr=base_lr * batch / 256, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=0)
    batches, _ = _batches(x, y, batch)
    for epoch in range(epochs):
        for xb, yb in batches(epoch):
            with torch.autocast("cpu", dtype=torch.float16, enabled=precision == "fp16"):
                loss = nn.CrossEntropyLoss()(head(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return head


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_precision_is_sers_autocast(precision):
    x, y = _data()
    batches, _ = _batches(x, y, 32)
    head, _ = train_sweep(batches, 12, 4, 3, 32, [2.0], 2, lambda h: 1.0, precision=precision)
    ref = _ser_train(x, y, 32, 2.0, 3, precision)
    assert torch.equal(head.weight, ref.weight) and torch.equal(head.bias, ref.bias)
    other = _ser_train(x, y, 32, 2.0, 3, "fp32" if precision == "fp16" else "fp16")
    assert not torch.equal(head.weight, other.weight)  # the setting changes what is computed


def test_heldout_split_is_seeded_stratified_and_disjoint():
    targets = [c for c in range(5) for _ in range(20)]
    keep, held = heldout_split(targets, 0.1, seed=3)
    assert sorted(keep + held) == list(range(100)) and not set(keep) & set(held)
    assert [sum(targets[i] == c for i in held) for c in range(5)] == [2] * 5
    assert heldout_split(targets, 0.1, seed=3) == (keep, held)
    assert heldout_split(targets, 0.1, seed=4)[1] != held
    # a class of one image is never held out whole; tiny shares still hold one out
    keep, held = heldout_split([0, 1, 1], 0.01, 0)
    assert keep[0] == 0 and len(held) == 1 and held[0] in (1, 2)


def test_learning_rates_follow_the_base_as_eval_yaml():
    moco = C.resolve("moco_v3+ser", "paper")
    bt = C.resolve("barlow_twins", "paper")
    dino = C.resolve("dino", "paper")
    assert base_lrs(moco) == [3.0, 10.0] and base_lrs(bt) == [1.0, 3.0]
    assert base_lrs(dino) == [3.0, 10.0]  # eval.yaml lists no DINO checkpoint: MoCo-v3's
    assert base_lrs({**dino, "base": "simclr"}) == dino["linear"]["base_lrs"]["default"]
    lc = moco["linear"]
    assert (lc["epochs"], lc["select_from"], lc["batch_size"]) == (50, 40, 2048)
    assert (lc["select_on"], lc["precision"]) == ("val", "fp16")


@pytest.fixture(scope="module")
def micro_probe(tmp_path_factory):
    from harness.train import pretrain

    root = tmp_path_factory.mktemp("probe")
    cfg = C.with_runtime(C.resolve("moco_v3", "micro", overrides=["train.max_steps=1"]), quiet=True)
    data = C.data_root(cfg, root)
    C.ensure_data(cfg, data)
    pretrain(cfg, root / "run", data)
    return cfg, root / "run", data


@pytest.mark.parametrize("select_on", ["val", "heldout"])
def test_micro_probe_reports_its_selection(micro_probe, select_on):
    from harness.eval.linear import linear_probe

    cfg, run, data = micro_probe
    cfg = {**cfg, "linear": {**cfg["linear"], "select_on": select_on, "heldout": 0.25}}
    m = linear_probe(run, data, cfg, quiet=True)
    lc = cfg["linear"]
    assert m["select_lr"] in lc["base_lrs"]["moco_v3"]
    assert lc["select_from"] < m["select_epoch"] <= lc["epochs"]
    if select_on == "val":  # selected on the split it reports: the same number
        assert m["select_top1"] == pytest.approx(m["top1"], abs=1e-4)
    assert 0 <= m["top1"] <= m["top5"] <= 100
