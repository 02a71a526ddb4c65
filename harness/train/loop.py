"""Pretraining: one loop, top to bottom. Where it runs (process, subprocess, Slurm) is
``harness.run.jobs``'s business; this file only trains one resolved config in one directory.

Resume is exact: the checkpoint holds model, optimiser, step and RNG states, and batches
are a pure function of (seed, epoch, step, rank), so N steps straight and N/2 + resume
give the same weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from harness.config import (
    build_method,
    config_hash,
    load_state,
    read_checkpoint,
    run_id,
    write_config,
)
from harness.data import ImageFolderDataset
from harness.data.batches import PretrainBatches, build_policy, to_device
from harness.data.loading import loader_options
from harness.data.views import finish
from harness.errors import HarnessError
from harness.io import save_torch, write_json, write_text
from harness.locks import describe, exclusive
from harness.model.backbone import Backbone
from harness.parallel import dist
from harness.parallel.global_bn import global_batchnorm
from harness.parallel.preempt import Preemption, quiet_worker
from harness.provenance import code_version
from harness.schedule import Progress, cosine
from harness.train import tracking


def lr_at(recipe: dict, it: int, total: int, its_per_epoch: int, global_batch: int) -> float:
    peak = recipe["base_lr"] * (global_batch / 256 if recipe.get("lr_batch_scaling") else 1)
    floor = recipe.get("min_lr", 0.0) or recipe.get("min_lr_frac", 0.0) * peak
    warm = min(int(recipe.get("warmup_epochs", 0) * its_per_epoch), total)
    if it < warm:
        return peak * it / warm
    return cosine(peak, floor, (it - warm) / max(1, total - warm))


def _rng_states() -> list[dict]:
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


def _set_rng_state(states: list[dict] | dict) -> None:
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


def make_optimizer(method, device: torch.device):
    """AdamW over the method's parameter groups (lr and decay are set every step), fused on
    CUDA; and the groups' specs (lr scale, weight decay)."""
    groups = method.param_groups()
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW([dict(g) for g in groups], lr=0.0, **fused), groups


def _require_finite(method, step: int) -> None:
    """No checkpoint holds a non-finite weight or buffer (one read-back, at save time only)."""
    tensors = [(n, t) for n, t in method.state_dict().items() if t.is_floating_point()]
    ok = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
    bad = [n for (n, _), fine in zip(tensors, ok) if not fine]
    if bad:
        raise HarnessError(
            f"{bad[0]} holds a non-finite value at step {step} ({len(bad)} tensor(s)): "
            "lower the lr or check the data; the last checkpoint is kept"
        )


def compile_backbones(method) -> None:
    """torch.compile every backbone of a method (online, momentum, teacher) in place
    (nn.Module.compile): parameter names, hence checkpoints, stay the same."""
    for m in method.modules():
        if isinstance(m, Backbone):
            m.compile()


def train_step(method, opt, groups, batch, progress: Progress, lr: float, amp, guard=None):
    """One optimisation step on a batch already on the device: schedules, forward under
    ``amp`` (autocast kwargs or None), ``guard(loss)`` before anything is updated, backward,
    the gradient average across ranks, the method's clipping, the optimiser and the method's
    after-step (EMA, centre). Returns the loss, its terms and whether every gradient was
    finite, as tensors (read back with the loss: checking here would sync every step)."""
    for g, spec in zip(opt.param_groups, groups):
        g["lr"] = lr * spec["lr_scale"]
        g["weight_decay"] = method.weight_decay(progress, spec)
    method.train()
    method.before_step(progress)
    with torch.autocast(**amp) if amp else contextlib.nullcontext():
        terms = method.training_step(batch, progress)
    loss = sum(terms.values())
    if guard:
        guard(loss)
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
    rt = cfg.get("runtime", {})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rt.get("threads"):
        torch.set_num_threads(rt["threads"])
    dist.init_from_env()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    lead = dist.rank() == 0  # only rank 0 writes files
    if lead:
        write_config(run_dir, cfg)  # the fully resolved config it runs with, runtime included
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])

    if device.type == "cuda" and rt.get("tf32", True):
        # Whatever bf16 autocast leaves in fp32 (losses, heads' norms) runs on tensor cores.
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    method = build_method(cfg).to(device)
    # The specs' BatchNorms use global-batch statistics (SyncBatchNorm on CUDA, ours on CPU).
    method = global_batchnorm(method, device)
    if rt.get("compile"):
        compile_backbones(method)
    policy = build_policy(method, cfg)
    gpu_augment = rt.get("gpu_augment")
    # Workers decode and crop; the photometric part runs batched on the GPU (``finish``).
    policy.defer = device.type == "cuda" if gpu_augment is None else bool(gpu_augment)
    tr = cfg["train"]
    images = ImageFolderDataset(data_root, "train")
    skip_bad = bool(cfg["data"].get("skip_bad"))
    batches = PretrainBatches(images, policy, tr["batch_size"], cfg["seed"], skip_bad)
    spe = batches.steps_per_epoch
    if spe == 0:
        raise HarnessError(
            f"{data_root}/train has {len(images)} images, fewer than one batch of "
            f"{tr['batch_size']}: use a smaller preset or a larger dataset"
        )
    total = spe * tr["epochs"]
    if tr.get("max_steps"):
        total = min(total, tr["max_steps"])

    opt, groups = make_optimizer(method, device)
    ckpt_path = run_dir / "checkpoint.pt"
    start = 0
    if ckpt_path.exists():
        ck = read_checkpoint(ckpt_path, cfg, device)
        load_state(method, ck["model"], ckpt_path)
        opt.load_state_dict(ck["optimizer"])
        _set_rng_state(ck["rng"])
        start = ck["step"]
    saved = start if ckpt_path.exists() else None  # the step the checkpoint on disk holds
    log_path = run_dir / "log.jsonl"
    if lead:
        _trim_log(log_path, start)

    tracker = tracking.start(cfg, run_dir, "pretrain")  # None without --wandb, off rank 0
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=range(start, total),
        generator=torch.Generator().manual_seed(0),  # keep global RNG untouched
        worker_init_fn=quiet_worker,
        **loader_options(rt, device),
    )
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    # A checkpoint every ``ckpt_minutes`` of training (and every ``ckpt_every`` steps when
    # set), at the end and on a preemption warning: a node lost without warning costs at most
    # that much, and short runs are not written over and over.
    ckpt_every = rt.get("ckpt_every")
    ckpt_seconds = 60 * (rt.get("ckpt_minutes") or 0)
    # The host reads the device every ``log_every`` steps only (and before any checkpoint):
    # the losses of the window in one transfer, the preemption and time decisions with them.
    log_every = max(1, rt.get("log_every") or 1)
    end = total if stop_at is None else min(stop_at, total)
    bar = tqdm(
        total=total,
        initial=start,
        desc=run_id(cfg),
        disable=rt.get("quiet", False) or not lead,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    if start and lead:
        _event(run_dir, "resumed", start)
    t0, it = time.time(), start
    saved_at = t0
    window: list[tuple] = []  # (step, lr, loss and terms on the device, time) since last read

    def flush(log) -> None:
        """Read the window's losses back in one transfer, log them, and stop at a non-finite
        one: its optimiser step is never checkpointed (the checkpoint before it is kept)."""
        if not window:
            return
        values = torch.stack([w[2] for w in window]).tolist()
        for (step, lr, _, t, skipped), (loss, *rest, grad_ok) in zip(window, values):
            bad = f"loss became {loss}" if not math.isfinite(loss) else None
            if bad is None and not grad_ok:
                bad = f"a gradient became non-finite (loss {loss:.4g})"
            if bad:
                window.clear()
                raise HarnessError(
                    f"{bad} at step {step}: lower the lr (recipe base_lr="
                    f"{cfg['recipe']['base_lr']}) or check the data; the last checkpoint "
                    "is kept and nothing after it was saved"
                )
            row = {
                "step": step,
                "lr": lr,
                "loss": loss,
                **dict(zip(names, rest)),
                "img_per_s": (step - start) * tr["batch_size"] / max(t - t0, 1e-9),
                "total_steps": total,
                "time": t,
                **({"skipped_images": skipped} if skipped else {}),
            }
            log.write(json.dumps(row) + "\n")
            if tracker:
                tracker.log({k: row[k] for k in ("lr", "loss", "img_per_s", *names)}, step=step)
        log.flush()
        bar.set_postfix(loss=f"{values[-1][0]:.3f}")
        window.clear()

    names: list[str] = []
    stream = iter(loader)
    with (
        open(log_path if lead else os.devnull, "a") as log,
        Preemption() as warning,
        _shut_down(stream),
    ):
        for it, batch in zip(range(start, end), stream):
            progress = Progress(it, total, spe)
            lr = lr_at(cfg["recipe"], it, total, spe, tr["batch_size"])
            skipped = batch.pop("skipped", [])  # data.skip_bad: images that did not decode
            batch = to_device(finish(batch, device), device)
            loss, terms, grad_ok = train_step(method, opt, groups, batch, progress, lr, amp)
            names = list(terms)
            losses = torch.stack(
                [t.detach().float() for t in (loss, *terms.values())] + [grad_ok.float()]
            )
            window.append((it + 1, lr, losses, time.time(), skipped))
            bar.update(1)
            warned = due = False
            if (it + 1) % log_every == 0 or it + 1 == end:
                # Warned of preemption or the time limit: save this step, then requeue.
                due = bool(ckpt_seconds) and time.time() - saved_at >= ckpt_seconds
                # One decision for every rank (rank 0's clock, any rank's warning).
                warned, due = warning.poll(due)
            stop = it + 1 < end and warned
            every = bool(ckpt_every) and (it + 1) % ckpt_every == 0
            save = every or due or it + 1 == end or stop
            if save or (it + 1) % log_every == 0:
                flush(log)
            if save:
                _require_finite(method, it + 1)
                saved_at = time.time()
                rng = _rng_states()  # every rank takes part; rank 0 writes
                if lead:
                    save_torch(
                        ckpt_path,
                        {
                            "step": it + 1,
                            "model": method.state_dict(),
                            "optimizer": opt.state_dict(),
                            "rng": rng,
                            "config": cfg,
                        },
                    )
                saved = it + 1
            if stop:
                if lead:
                    _event(run_dir, "preempted", it + 1, signal=warning.signum)
                bar.close()
                warning.hand_over()
    bar.close()
    if tracker:
        tracker.finish()
    done = end == total
    summary = {
        "run_id": run_id(cfg),
        "steps": end,
        "total_steps": total,
        "finished": done,
        "seconds": time.time() - t0,
        "method": cfg["method"],
        "preset": cfg["preset"],
        "config_hash": config_hash(cfg),
        "code": code_version(),  # the code that trained it
    }
    if skip_bad and lead:
        summary["skipped_images"] = _skipped(log_path)
    if done and (total <= 0 or saved != total):
        # pretrain.json marks the job done; without the final checkpoint nothing could read it.
        raise HarnessError(
            f"{run_id(cfg)} planned {total} steps but its checkpoint holds step {saved}: "
            f"nothing is marked done; check train.epochs and train.batch_size"
        )
    if done and lead:
        # What read_result checks before it trusts the run as done, without loading it.
        summary["checkpoint"] = {"step": saved, "bytes": ckpt_path.stat().st_size}
        write_json(run_dir / "pretrain.json", summary)
    return summary


def _event(run_dir: Path, what: str, step: int, **extra) -> None:
    """Requeue history of a run (``harness status`` counts it): one line per event."""
    with open(run_dir / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": what, "step": step, "time": time.time(), **extra}) + "\n")


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


def _skipped(log_path: Path) -> int:
    """Images skipped over the whole run (``data.skip_bad``), resumed parts included."""
    n = 0
    for ln in log_path.read_text().splitlines():
        try:
            n += len(json.loads(ln).get("skipped_images", []))
        except (ValueError, AttributeError):
            continue
    return n


def _trim_log(path: Path, start: int) -> None:
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
