"""``harness audit``, ``flops`` and ``params``: one method's gradients, cost and size."""

from __future__ import annotations

import json

from harness.cli.args import takes_overrides


def cmd_audit(a) -> int:
    import torch.distributed

    from harness.instruments.audit import audit
    from harness.parallel import dist

    try:
        # Under torchrun: every rank, one global batch.
        r = audit(a.method, a.preset, a.seed, a.overrides)
        lead = dist.rank() == 0
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if not lead:  # every rank holds the same averaged result; one prints it
        return 0
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        groups = list(next(iter(r["terms"].values())))
        w = {t: max(12, len(t)) + 2 for t in r["terms"]}
        lead = max(map(len, groups)) + 2
        print(f"{'group':<{lead}}" + "".join(f"{t:>{w[t]}}" for t in r["terms"]))
        for g in groups:
            print(f"{g:<{lead}}" + "".join(f"{r['terms'][t][g]:>{w[t]}.4g}" for t in r["terms"]))
    return 0


def cmd_flops(a) -> int:
    from harness import config as C
    from harness.instruments.flops import step_flops
    from methods.registry import parse

    batch = a.batch or (256 if a.preset == "paper" else None)
    batch = batch or C.resolve(a.method, a.preset, overrides=a.overrides)["train"]["batch_size"]
    base = parse(a.method)[0].name
    f = step_flops(a.method, a.preset, batch, a.overrides)
    f0 = step_flops(base, a.preset, batch, a.overrides)
    print(
        f"{a.method} @ {a.preset}, {batch} images/step: {f / 1e9:.2f} GFLOPs/image "
        f"(train step, fwd+bwd); {base}: {f0 / 1e9:.2f}; ratio {f / f0:.4f}"
    )
    return 0


def cmd_params(a) -> int:
    from harness.instruments.flops import params_millions

    m = params_millions(a.method, a.preset, a.overrides)
    print(f"{a.method} @ {a.preset}: {m:.2f}M trainable parameters (online model)")
    return 0


def add(sub) -> None:
    for name, fn, default_preset, help_ in (
        ("audit", cmd_audit, "tiny", "per-term gradient norms on each parameter group"),
        ("flops", cmd_flops, "paper", "training FLOPs per image and ratio to the base method"),
        ("params", cmd_params, "paper", "trainable parameters of the online model"),
    ):
        r = sub.add_parser(name, help=help_)
        r.add_argument("method")
        r.add_argument("--preset", default=default_preset)
        if name == "audit":
            r.add_argument("--json", action="store_true")
            r.add_argument("--seed", type=int, default=0)
        if name == "flops":
            r.add_argument("--batch", type=int, help="images per GPU (paper: 256)")
        takes_overrides(r, fn)
