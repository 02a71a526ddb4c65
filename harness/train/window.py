"""The metrics of the steps since the host last read the device, and their log lines."""

from __future__ import annotations

import json
import math

import torch

from harness.errors import HarnessError


class MetricsWindow:
    """Per-step losses kept on the device until ``flush`` reads them back in one transfer,
    writes one log line per step (and the same to wandb), and stops at a non-finite one."""

    def __init__(self, cfg: dict, log, bar, tracker, start: int, total: int, t0: float):
        self.cfg = cfg
        self.log = log
        self.bar = bar
        self.tracker = tracker  # None without --wandb, off rank 0
        self.start, self.total, self.t0 = start, total, t0
        self.names: list[str] = []  # the loss terms, in the method's order
        self.rows: list[tuple] = []  # (step, lr, loss and terms on the device, time, skipped)

    def add(self, step: int, lr: float, loss, terms: dict, grad_ok, t: float, skipped) -> None:
        self.names = list(terms)
        losses = torch.stack(
            [v.detach().float() for v in (loss, *terms.values())] + [grad_ok.float()]
        )
        self.rows.append((step, lr, losses, t, skipped))

    def flush(self) -> None:
        """Log the window's steps; a non-finite loss or gradient raises, so its optimiser
        step is never checkpointed (the checkpoint before it is kept)."""
        if not self.rows:
            return
        batch_size = self.cfg["train"]["batch_size"]
        values = torch.stack([w[2] for w in self.rows]).tolist()
        for (step, lr, _, t, skipped), (loss, *rest, grad_ok) in zip(self.rows, values):
            bad = f"loss became {loss}" if not math.isfinite(loss) else None
            if bad is None and not grad_ok:
                bad = f"a gradient became non-finite (loss {loss:.4g})"
            if bad:
                self.rows.clear()
                raise HarnessError(
                    f"{bad} at step {step}: lower the lr (recipe base_lr="
                    f"{self.cfg['recipe']['base_lr']}) or check the data; the last checkpoint "
                    "is kept and nothing after it was saved"
                )
            row = {
                "step": step,
                "lr": lr,
                "loss": loss,
                **dict(zip(self.names, rest)),
                "img_per_s": (step - self.start) * batch_size / max(t - self.t0, 1e-9),
                "total_steps": self.total,
                "time": t,
                **({"skipped_images": skipped} if skipped else {}),
            }
            self.log.write(json.dumps(row) + "\n")
            if self.tracker:
                keys = ("lr", "loss", "img_per_s", *self.names)
                self.tracker.log({k: row[k] for k in keys}, step=step)
        self.log.flush()
        self.bar.set_postfix(loss=f"{values[-1][0]:.3f}")
        self.rows.clear()
