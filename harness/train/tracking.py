"""wandb for the harness (``harness run … --wandb``): one wandb run per harness run.

The wandb run id is ``config.run_id(cfg)``, so a requeued or resumed pretraining job and the
evaluation jobs of that run all write into the same wandb run. Offline by default: each
session writes ``<run_dir>/wandb/offline-run-<time>-<run id>/``, and ``wandb sync`` uploads
the sessions of one id into one run, in order of start time.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.config import run_id
from harness.errors import HarnessError
from harness.parallel import dist


def start(cfg: dict, run_dir: Path, job_type: str):
    """The wandb run to log ``cfg``'s job into, or None (``--wandb`` not given, or not rank 0)."""
    if not cfg.get("runtime", {}).get("wandb") or dist.rank() != 0:
        return None
    try:
        import wandb
    except ImportError:
        raise HarnessError(
            "--wandb needs wandb: pip install '.[wandb]' (or drop --wandb)"
        ) from None
    os.environ.setdefault("WANDB_MODE", "offline")  # a user's WANDB_MODE=online still wins
    try:
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ser-harness"),
            id=run_id(cfg),
            resume="allow",
            dir=str(run_dir),
            job_type=job_type,
            reinit="finish_previous",
            config={k: v for k, v in cfg.items() if k != "runtime"},
            # Jobs' stdout already lands in Slurm/submitit logs; don't wrap the streams twice.
            settings=wandb.Settings(console="off", silent=cfg["runtime"].get("quiet", False)),
        )
    except wandb.errors.Error as e:
        raise HarnessError(
            f"wandb could not start ({e}): run `wandb login`, or unset WANDB_MODE to log offline"
        ) from None


def log_eval(cfg: dict, run_dir: Path, record: dict) -> None:
    """An evaluation's scalar metrics into the run's summary as ``eval/<evaluation>-<dataset>/…``.

    Summary, not history: an evaluation has no training step, and a history row logged by a
    later session at step 0 would sit behind the pretraining steps already synced.
    """
    tracker = start(cfg, run_dir, "eval")
    if tracker is None:
        return
    tracker.summary.update(
        flat(record["metrics"], f"eval/{record['evaluation']}-{record['dataset']}")
    )
    tracker.finish()


def flat(metrics: dict, prefix: str) -> dict:
    """Numbers of a (nested) metrics dict, keys joined by '/'; lists (t-SNE points) are skipped."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}/{k}"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}/{k}"] = v
    return out
