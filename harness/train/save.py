"""What a pretraining run leaves in its folder: the atomic checkpoint, the requeue events
and, once every step is trained and saved, pretrain.json."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from harness.config import config_hash, run_id
from harness.errors import HarnessError
from harness.io import save_torch, write_json
from harness.parallel import dist
from harness.provenance import code_version


def rng_states() -> list[dict]:
    """Every rank's RNG streams (stochastic depth draws differ per rank), in rank order."""
    s = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    if not dist.is_dist():
        return [s]
    out = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, s)
    return out


def require_finite(method, step: int) -> None:
    """No checkpoint holds a non-finite weight or buffer (one read-back, at save time only)."""
    tensors = [(n, t) for n, t in method.state_dict().items() if t.is_floating_point()]
    ok = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
    bad = [n for (n, _), fine in zip(tensors, ok) if not fine]
    if bad:
        raise HarnessError(
            f"{bad[0]} holds a non-finite value at step {step} ({len(bad)} tensor(s)): "
            "lower the lr or check the data; the last checkpoint is kept"
        )


def save_checkpoint(path: Path, step: int, cfg: dict, s) -> float:
    """Checkpoint ``s`` (a ``Setup``) after ``step``; every rank takes part, rank 0 writes.
    Returns the time the save started at, once the weights were found finite."""
    require_finite(s.method, step)
    saved_at = time.time()
    rng = rng_states()
    if s.lead:
        save_torch(
            path,
            {
                "step": step,
                "model": s.method.state_dict(),
                "optimizer": s.opt.state_dict(),
                "rng": rng,
                "config": cfg,
            },
        )
    return saved_at


def event(run_dir: Path, what: str, step: int, **extra) -> None:
    """Requeue history of a run (``harness status`` counts it): one line per event."""
    with open(run_dir / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": what, "step": step, "time": time.time(), **extra}) + "\n")


def summarise(cfg: dict, run_dir: Path, s, end: int, saved: int | None, seconds: float) -> dict:
    """The run's summary; when every step is trained, written as pretrain.json (rank 0)."""
    total = s.total
    done = end == total
    summary = {
        "run_id": run_id(cfg),
        "steps": end,
        "total_steps": total,
        "finished": done,
        "seconds": seconds,
        "method": cfg["method"],
        "preset": cfg["preset"],
        "config_hash": config_hash(cfg),
        "code": code_version(),  # the code that trained it
    }
    if s.skip_bad and s.lead:
        summary["skipped_images"] = skipped_images(run_dir / "log.jsonl")
    if done and (total <= 0 or saved != total):
        # pretrain.json marks the job done; without the final checkpoint nothing could read it.
        raise HarnessError(
            f"{run_id(cfg)} planned {total} steps but its checkpoint holds step {saved}: "
            f"nothing is marked done; check train.epochs and train.batch_size"
        )
    if done and s.lead:
        # What read_result checks before it trusts the run as done, without loading it.
        ckpt_path = run_dir / "checkpoint.pt"
        summary["checkpoint"] = {"step": saved, "bytes": ckpt_path.stat().st_size}
        write_json(run_dir / "pretrain.json", summary)
    return summary


def skipped_images(log_path: Path) -> int:
    """Images skipped over the whole run (``data.skip_bad``), resumed parts included."""
    n = 0
    for ln in log_path.read_text().splitlines():
        try:
            n += len(json.loads(ln).get("skipped_images", []))
        except (ValueError, AttributeError):
            continue
    return n
