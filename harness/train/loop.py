"""Pretraining: one loop, top to bottom. Where it runs (process, subprocess, Slurm) is
``harness.run.planning``'s business; this file only trains one resolved config in one directory:
setup (``train.setup``), resume (``train.resume``), the steps, their metrics
(``train.window``) and what is saved (``train.save``).

Resume is exact: the checkpoint holds model, optimiser, step and RNG states, and batches
are a pure function of (seed, epoch, step, rank), so N steps straight and N/2 + resume
give the same weights.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from harness.data.batches import to_device
from harness.data.deferred import finish
from harness.data.loading import loader_options
from harness.errors import HarnessError
from harness.locks import describe, exclusive
from harness.parallel import dist
from harness.parallel.preempt import Preemption, quiet_worker
from harness.schedule import Progress, cosine
from harness.train import tracking
from harness.train.resume import resume
from harness.train.save import event, save_checkpoint, summarise
from harness.train.setup import compile_backbones, make_optimizer, progress_bar, setup
from harness.train.window import MetricsWindow

__all__ = ["compile_backbones", "lr_at", "make_optimizer", "pretrain", "train_step"]


def lr_at(recipe: dict, it: int, total: int, its_per_epoch: int, global_batch: int) -> float:
    peak = recipe["base_lr"] * (global_batch / 256 if recipe.get("lr_batch_scaling") else 1)
    floor = recipe.get("min_lr", 0.0) or recipe.get("min_lr_frac", 0.0) * peak
    warm = min(int(recipe.get("warmup_epochs", 0) * its_per_epoch), total)
    if it < warm:
        return peak * it / warm
    return cosine(peak, floor, (it - warm) / max(1, total - warm))


def train_step(method, opt, groups, batch, progress: Progress, lr: float, amp):
    """One optimisation step on a batch already on the device: schedules, forward under
    ``amp`` (autocast kwargs or None), backward, the gradient average across ranks, the
    method's clipping, the optimiser and the method's after-step (EMA, centre). Returns the
    loss, its terms and whether every gradient was finite, as tensors (read back with the
    loss: checking here would sync every step)."""
    for g, spec in zip(opt.param_groups, groups):
        g["lr"] = lr * spec["lr_scale"]
        g["weight_decay"] = method.weight_decay(progress, spec)
    method.train()
    method.before_step(progress)
    with torch.autocast(**amp) if amp else contextlib.nullcontext():
        terms = method.training_step(batch, progress)
    loss = sum(terms.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    dist.average_gradients(method.trainable_parameters())
    method.clip_gradients(progress)
    grads = [p.grad for p in method.trainable_parameters() if p.grad is not None]
    grad_ok = torch.nn.utils.get_total_norm(grads).isfinite() if grads else loss.new_ones(())
    opt.step()
    method.after_step(progress)
    return loss, terms, grad_ok


def pretrain(cfg: dict, run_dir: Path, data_root: Path, stop_at: int | None = None) -> dict:
    """Train ``cfg`` in ``run_dir`` (resuming from its checkpoint); ``stop_at`` ends early.

    One trainer per run folder, whatever started it: a second is refused, never let write
    beside the first (rank 0 holds the lock for all ranks of a job)."""
    if dist.env_rank() != 0:
        return _pretrain(cfg, run_dir, data_root, stop_at)
    lock = Path(run_dir) / ".train.lock"

    def busy(who: dict):
        raise HarnessError(
            f"run folder {run_dir} is being trained by {describe(who)}: wait for it or stop it"
        )

    with exclusive(lock, busy):
        return _pretrain(cfg, run_dir, data_root, stop_at)


def _pretrain(cfg: dict, run_dir: Path, data_root: Path, stop_at: int | None = None) -> dict:
    run_dir = Path(run_dir)
    s = setup(cfg, run_dir, data_root)
    rt, device, lead, total, spe = s.rt, s.device, s.lead, s.total, s.steps_per_epoch
    ckpt_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    start, saved = resume(cfg, ckpt_path, log_path, s)  # saved: the step on disk, or None

    tracker = tracking.start(cfg, run_dir, "pretrain")  # None without --wandb, off rank 0
    loader = DataLoader(
        s.batches,
        batch_size=None,
        sampler=range(start, total),
        generator=torch.Generator().manual_seed(0),  # keep global RNG untouched
        worker_init_fn=quiet_worker,
        **loader_options(rt, device),
    )
    # A checkpoint every ``ckpt_minutes`` of training (and every ``ckpt_every`` steps when
    # set), at the end and on a preemption warning: a node lost without warning costs at most
    # that much, and short runs are not written over and over.
    ckpt_every = rt.get("ckpt_every")
    ckpt_seconds = 60 * (rt.get("ckpt_minutes") or 0)
    # The host reads the device every ``log_every`` steps only (and before any checkpoint):
    # the losses of the window in one transfer, the preemption and time decisions with them.
    log_every = max(1, rt.get("log_every") or 1)
    end = total if stop_at is None else min(stop_at, total)
    bar = progress_bar(cfg, s, start)
    if start and lead:
        event(run_dir, "resumed", start)
    t0 = time.time()
    saved_at = t0

    stream = iter(loader)
    with (
        open(log_path if lead else os.devnull, "a") as log,
        Preemption() as warning,
        _shut_down(stream),
    ):
        window = MetricsWindow(cfg, log, bar, tracker, start, total, t0)
        for it, batch in zip(range(start, end), stream):
            step = it + 1
            progress = Progress(it, total, spe)
            lr = lr_at(cfg["recipe"], it, total, spe, cfg["train"]["batch_size"])
            skipped = batch.pop("skipped", [])  # data.skip_bad: images that did not decode
            batch = to_device(finish(batch, device), device)
            loss, terms, grad_ok = train_step(s.method, s.opt, s.groups, batch, progress, lr, s.amp)
            window.add(step, lr, loss, terms, grad_ok, time.time(), skipped)
            bar.update(1)
            warned = due = False
            if step % log_every == 0 or step == end:
                # Warned of preemption or the time limit: save this step, then requeue.
                due = bool(ckpt_seconds) and time.time() - saved_at >= ckpt_seconds
                # One decision for every rank (rank 0's clock, any rank's warning).
                warned, due = warning.poll(due)
            stop = step < end and warned
            every = bool(ckpt_every) and step % ckpt_every == 0
            save = every or due or step == end or stop
            if save or step % log_every == 0:
                window.flush()
            if save:
                saved_at = save_checkpoint(ckpt_path, step, cfg, s)
                saved = step
            if stop:
                if lead:
                    event(run_dir, "preempted", step, signal=warning.signum)
                bar.close()
                warning.hand_over()
    bar.close()
    if tracker:
        tracker.finish()
    return summarise(cfg, run_dir, s, end, saved, time.time() - t0)


@contextlib.contextmanager
def _shut_down(stream):
    """Stop the loader's workers however the loop ends. They ignore SIGTERM (quiet_worker), so
    workers left to an iterator that outlives the loop (a traceback keeps it: a failed step,
    a job's pickled exception) would block the process's exit, which joins them, forever."""
    try:
        yield stream
    finally:
        shutdown = getattr(stream, "_shutdown_workers", None)  # multi-process iterators only
        if shutdown is not None:
            shutdown()
