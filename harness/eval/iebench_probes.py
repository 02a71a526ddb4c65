"""3DIEBench probes on frozen features (spec/evals.md §4.2–4.3, SIE's evaluation scripts).

Inputs are tensors so the probes do not depend on how the dataset is read: per object, the
features of V views (N×V×D), the object's class and, for rotation, each view's Euler angles
(N×V×3, the first three latent values).

* Classification: each epoch every object contributes one random view; Adam 1e-3, wd 0,
  batch 256, constant LR, linear or 3-layer MLP head; top-1/top-5 over every val view given
  (N×V: the evaluator passes one seeded random view per object, V = 1, as SIE validates, or
  all of them, the expectation of that number; ``iebench.val_views``).
* Rotation: two distinct random views per object and epoch, concatenated features → the
  quaternion of R_1⁻¹·R_2 (scipy's "xyz" extrinsic Euler convention and quaternion sign, as
  SIE computes it; q ≡ −q is not folded, as in SIE); MSE; R² with one scalar target mean.
"""

from __future__ import annotations

import torch

from harness.config.evaluations import EVALUATIONS
from harness.eval.heads import make_head, predict, train_head
from harness.eval.metrics import topk

PROBE_RECIPE = EVALUATIONS["iebench"]


def _axis_quat(angle: torch.Tensor, axis: int) -> torch.Tensor:
    q = torch.zeros(*angle.shape, 4, dtype=angle.dtype, device=angle.device)
    q[..., axis] = torch.sin(angle / 2)
    q[..., 3] = torch.cos(angle / 2)
    return q


def quat_mul(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Hamilton product p ⊗ q (apply q, then p) of (x, y, z, w) quaternions."""
    pv, pw, qv, qw = p[..., :3], p[..., 3:], q[..., :3], q[..., 3:]
    v = pw * qv + qw * pv + torch.cross(pv, qv, dim=-1)
    w = pw * qw - (pv * qv).sum(-1, keepdim=True)
    return torch.cat([v, w], dim=-1)


def euler_xyz_to_quat(angles: torch.Tensor) -> torch.Tensor:
    """scipy ``Rotation.from_euler("xyz", a).as_quat()``: extrinsic x, then y, then z."""
    a = angles.double()
    qx, qy, qz = (_axis_quat(a[..., i], i) for i in range(3))
    return quat_mul(qz, quat_mul(qy, qx))


def relative_rotation(angles_1: torch.Tensor, angles_2: torch.Tensor) -> torch.Tensor:
    """Quaternion of R_1⁻¹·R_2 (SIE's ``rot_1.inv() * rot_2``)."""
    q1 = euler_xyz_to_quat(angles_1)
    conj = torch.cat([-q1[..., :3], q1[..., 3:]], dim=-1)
    return quat_mul(conj, euler_xyz_to_quat(angles_2)).float()


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 − SS_res / SS_tot around the mean of *all* target entries (SIE's ``r2_score``)."""
    ss_tot = ((target - target.mean()) ** 2).sum()
    ss_res = ((target - pred) ** 2).sum()
    return (1 - ss_res / ss_tot).item()


def _view_pairs(n: int, views: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two distinct views per object, uniformly among ordered pairs."""
    v1 = torch.randint(views, (n,), generator=g)
    v2 = (v1 + torch.randint(1, views, (n,), generator=g)) % views
    return v1, v2


def classify_objects(
    train_feats,
    train_labels,
    val_feats,
    val_labels,
    n_classes: int = 55,
    head: str = "linear",
    seed: int = 0,
    quiet: bool = True,
    **recipe,
) -> dict:
    """{"top1", "top5"} in percent. feats: N×V×D; labels: N."""
    r = {**PROBE_RECIPE, **recipe}
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, views, d = train_feats.shape
    rows = torch.arange(n)
    train_labels = train_labels.to(train_feats.device)

    def epoch():
        pick = train_feats[rows, torch.randint(views, (n,), generator=g)]
        for idx in torch.randperm(n, generator=g).split(r["batch_size"]):
            yield pick[idx], train_labels[idx]

    model = make_head(head, d, n_classes).to(train_feats.device)
    train_head(
        model, epoch, r["epochs"], r["lr"], r["weight_decay"], desc="3DIEBench class", quiet=quiet
    )
    logits = predict(model, val_feats.flatten(0, 1)).cpu()
    return topk(logits, val_labels.cpu().repeat_interleave(val_feats.shape[1]))


def rotation_r2(
    train_feats,
    train_angles,
    val_feats,
    val_angles,
    head: str = "mlp",
    seed: int = 0,
    quiet: bool = True,
    **recipe,
) -> dict:
    """{"r2" (fraction, 1 = perfect), "mse"} of the relative-rotation quaternion regressed
    from concatenated pairs of view features. feats: N×V×D; angles: N×V×3."""
    r = {**PROBE_RECIPE, **recipe}
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)

    def pairs(feats, angles, gen):
        v1, v2 = _view_pairs(len(feats), feats.shape[1], gen)
        rows = torch.arange(len(feats))
        x = torch.cat([feats[rows, v1], feats[rows, v2]], dim=1)
        return x, relative_rotation(angles[rows, v1], angles[rows, v2]).to(x.device)

    def epoch():
        x, y = pairs(train_feats, train_angles, g)
        for idx in torch.randperm(len(x), generator=g).split(r["batch_size"]):
            yield x[idx], y[idx]

    model = make_head(head, 2 * train_feats.shape[2], 4).to(train_feats.device)
    train_head(
        model,
        epoch,
        r["epochs"],
        r["lr"],
        r["weight_decay"],
        loss="mse",
        desc="3DIEBench rotation",
        quiet=quiet,
    )
    vx, vy = pairs(val_feats, val_angles, torch.Generator().manual_seed(seed + 1))
    pred = predict(model, vx)
    return {"r2": r2_score(pred, vy), "mse": torch.mean((pred - vy) ** 2).item()}
