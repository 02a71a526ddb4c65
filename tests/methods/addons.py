"""What the add-on tests share: a built method with one real batch, the encodings its add-ons
receive, and SimCLR's NT-Xent written row by row (the reference for the ``@original`` losses)."""

import torch
import torch.nn.functional as F

from harness import config as C
from harness.instruments.audit import random_batch


def setup(name, seed=0):
    cfg = C.resolve(name, "micro")
    torch.manual_seed(seed)
    m = C.build_method(cfg).train()
    return m, random_batch(m, cfg, seed)


def encode_for_addons(m, batch):
    """What training_step hands to add-ons, without the base loss."""
    views = batch["views"]
    extras = [k for k in ("clean", "rotated") if k in batch]
    enc = m.encode_views(m.backbone, views + [[batch[k]] for k in extras], m.taps())
    batch["encoded"] = dict(zip(extras, enc[len(views) :]))
    return enc[: len(views)]


def nt_xent_loop(a, b, tau):
    """SimCLR NT-Xent written row by row."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        den = sum(torch.exp(z[i] @ z[j] / tau) for j in range(2 * n) if j != i)
        total = total - torch.log(torch.exp(z[i] @ z[pos] / tau) / den)
    return total / (2 * n)
