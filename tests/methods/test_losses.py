"""Each public loss against a direct, loop-level re-implementation of its formula."""

import math

import torch

from methods import losses

torch.manual_seed(0)


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_moco_v3_two_tau_and_sum_of_directions():
    q1, q2, k1, k2 = (torch.randn(6, 8, dtype=torch.float64) for _ in range(4))
    tau = 0.2

    def ref(q, k):
        total = 0.0
        for i in range(len(q)):
            logits = [_cos(q[i], k[j]) / tau for j in range(len(k))]
            total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
        return total / len(q) * 2 * tau

    got = losses.moco_v3_contrastive(q1, k2, tau) + losses.moco_v3_contrastive(q2, k1, tau)
    assert abs(float(got) - (ref(q1, k2) + ref(q2, k1))) < 1e-6
    # The 2τ factor is there: without it the value would differ by that factor.
    assert abs(float(losses.moco_v3_contrastive(q1, k2, tau)) / ref(q1, k2) - 1) < 1e-9


def test_moco_v3_keys_carry_no_gradient():
    q = torch.randn(4, 8, requires_grad=True)
    k = torch.randn(4, 8, requires_grad=True)
    losses.moco_v3_contrastive(q, k, 0.2).backward()
    assert q.grad is not None and k.grad is None


def test_dino_centering_sharpening_and_excluded_pairs():
    K, B = 7, 5
    s = [torch.randn(B, K, dtype=torch.float64) for _ in range(4)]  # 2 global + 2 local
    t = [torch.randn(B, K, dtype=torch.float64) for _ in range(2)]
    center = torch.randn(1, K, dtype=torch.float64)
    ts, tt = 0.1, 0.04

    def softmax(v):
        m = max(v)
        e = [math.exp(x - m) for x in v]
        return [x / sum(e) for x in e]

    total, pairs = 0.0, 0
    for i in range(2):
        for v in range(4):
            if v == i:
                continue
            ce = 0.0
            for b in range(B):
                p = softmax([(t[i][b, k] - center[0, k]).item() / tt for k in range(K)])
                q = softmax([s[v][b, k].item() / ts for k in range(K)])
                ce += -sum(p[k] * math.log(q[k]) for k in range(K))
            total += ce / B
            pairs += 1
    assert pairs == 6
    got = losses.dino_loss(s, t, center, ts, tt)
    assert abs(float(got) - total / pairs) < 1e-6


def test_barlow_twins_affine_free_bn_and_lambda():
    B, D = 9, 5
    z1, z2 = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    lam = 0.0051

    def bn(z):
        cols = []
        for d in range(D):
            col = [z[b, d].item() for b in range(B)]
            mu = sum(col) / B
            var = sum((x - mu) ** 2 for x in col) / B  # biased, as BatchNorm in training
            cols.append([(x - mu) / math.sqrt(var + 1e-5) for x in col])
        return cols  # D lists of B

    a, b = bn(z1), bn(z2)
    c = [[sum(a[i][n] * b[j][n] for n in range(B)) / B for j in range(D)] for i in range(D)]
    ref = sum((1 - c[i][i]) ** 2 for i in range(D)) + lam * sum(
        c[i][j] ** 2 for i in range(D) for j in range(D) if i != j
    )
    assert abs(float(losses.barlow_twins(z1, z2, lam)) - ref) < 1e-6
    # λ weights only the off-diagonal part.
    assert (
        abs(float(losses.barlow_twins(z1, z2, 0.0)) - sum((1 - c[i][i]) ** 2 for i in range(D)))
        < 1e-6
    )


def test_ser_token_infonce_excludes_same_image_negatives():
    N, D = 12, 6
    target = torch.randn(N, D, dtype=torch.float64)
    query = torch.randn(N, D, dtype=torch.float64)
    image = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
    tau = 0.3
    total = 0.0
    for j in range(N):
        num = math.exp(_cos(target[j], query[j]) / tau)
        den = sum(
            math.exp(_cos(target[i], query[j]) / tau)
            for i in range(N)
            if i == j or image[i] != image[j]
        )
        total += -math.log(num / den)
    got = losses.ser_token_infonce(target, query, image, tau)
    assert abs(float(got) - total / N) < 1e-6
    # Including same-image negatives would change the value: the exclusion is real.
    all_neg = (
        sum(
            -math.log(
                math.exp(_cos(target[j], query[j]) / tau)
                / sum(math.exp(_cos(target[i], query[j]) / tau) for i in range(N))
            )
            for j in range(N)
        )
        / N
    )
    assert abs(float(got) - all_neg) > 1e-3


def test_ser_token_infonce_gradients_reach_both_sides():
    t = torch.randn(8, 4, requires_grad=True)
    q = torch.randn(8, 4, requires_grad=True)
    losses.ser_token_infonce(t, q, torch.arange(8) // 2, 0.5).backward()
    assert t.grad.abs().sum() > 0 and q.grad.abs().sum() > 0
