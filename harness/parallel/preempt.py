"""Preemption and time limits, seen from a training loop (pretraining's, and the detection
evaluator's detectron2 trainer).

Slurm warns a job with USR2 (``--signal``) before it is preempted or reaches its time limit,
and submitit's handler then checkpoints and requeues at once — in the middle of whatever
the loop was doing. Inside ``Preemption`` the signal is only noted; the loop finishes its
step, saves, and then hands the signal to submitit (``hand_over``), which requeues the job
and exits. The requeued run resumes from exactly that step.
"""

from __future__ import annotations

import os
import signal
import threading

import torch

from harness.parallel import dist


def warning_signal() -> int:
    # The signal submitit listens to (SUBMITIT_PREEMPT_SIGNAL, USR2 unless set).
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class Preemption:
    def __init__(self):
        self.signum: int | None = None
        self._previous = None

    def __enter__(self) -> Preemption:
        sig = warning_signal()
        prev = signal.getsignal(sig)
        # Only where someone (submitit) handles the warning: elsewhere it keeps its default.
        if callable(prev) and threading.current_thread() is threading.main_thread():
            self._previous = prev
            signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """True on every rank once any rank was warned (all ranks stop at the same step)."""
        return self.poll(False)[0]

    def poll(self, due: bool) -> tuple[bool, bool]:
        """(warned on any rank, ``due`` on rank 0), the same on every rank: one reduction per
        step serves both the preemption warning and the time-based checkpoint."""
        flags = [float(self.signum is not None), float(due)]
        if dist.is_dist():
            if dist.rank() != 0:
                flags[1] = 0.0  # rank 0's clock decides; ranks' clocks differ
            t = torch.tensor(flags, device="cuda" if torch.cuda.is_available() else "cpu")
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flags = t.tolist()
        return flags[0] > 0, flags[1] > 0

    def hand_over(self) -> None:
        """After the checkpoint is saved: let submitit requeue (rank 0) and leave."""
        if dist.is_dist():
            torch.distributed.barrier()  # rank 0's checkpoint is on disk before anyone exits
        prev, self._previous = self._previous, None
        signal.signal(warning_signal(), prev)
        if prev is not None:
            prev(self.signum or warning_signal(), None)  # rank 0: requeues, then sys.exit
        raise SystemExit(-1)  # other ranks: nothing left to do

    def __exit__(self, *exc) -> None:
        # A warning after the last step is dropped: the job is about to finish anyway.
        if self._previous is not None:
            signal.signal(warning_signal(), self._previous)


def quiet_worker(_: int) -> None:
    """DataLoader workers ignore the warning and SIGTERM: Slurm signals every process of a
    step, and a worker killed by them would crash the loop before it can save."""
    signal.signal(warning_signal(), signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
