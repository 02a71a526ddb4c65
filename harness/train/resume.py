"""Resume: a run folder's checkpoint restores the weights, optimiser, RNG streams and step,
and the log drops what was trained after it (those steps run again)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from harness.config import load_state, read_checkpoint
from harness.io import write_text
from harness.parallel import dist


def resume(cfg: dict, ckpt_path: Path, log_path: Path, s) -> tuple[int, int | None]:
    """Restore ``s`` (a ``Setup``) from ``ckpt_path`` when it exists. Returns the step to
    start at and the step the checkpoint on disk holds (None without one)."""
    start = 0
    if ckpt_path.exists():
        ck = read_checkpoint(ckpt_path, cfg, s.device)
        load_state(s.method, ck["model"], ckpt_path)
        s.opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        start = ck["step"]
    saved = start if ckpt_path.exists() else None
    if s.lead:
        trim_log(log_path, start)
    return start, saved


def set_rng_state(states: list[dict] | dict) -> None:
    # A run resumed on another number of ranks keeps the data order but not the RNG streams.
    s = states if isinstance(states, dict) else states[dist.rank() % len(states)]
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        cuda = s["cuda"]
        torch.cuda.set_rng_state(
            cuda if isinstance(cuda, torch.Tensor) else cuda[torch.cuda.current_device()]
        )


def trim_log(path: Path, start: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            row = json.loads(ln)
        except ValueError:  # a line cut short by a kill mid-write: rewritten by the resume
            continue
        if isinstance(row, dict) and row.get("step", start + 1) <= start:
            keep.append(ln)
    write_text(path, "".join(ln + "\n" for ln in keep))
