"""Where training is (``Progress``) and the half-cosine every schedule uses: the one piece of
training state that methods (momentum, teacher temperature, weight decay) and the loop share,
kept at the bottom so neither imports the other for it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Where training is: iteration ``it`` of ``total``, and the epoch it belongs to."""

    it: int
    total: int
    its_per_epoch: int

    @property
    def epoch(self) -> int:
        return self.it // self.its_per_epoch

    @property
    def frac_epoch(self) -> float:
        return self.it / self.its_per_epoch

    @property
    def epochs(self) -> float:
        return self.total / self.its_per_epoch


def cosine(start: float, end: float, t: float) -> float:
    """Half-cosine from ``start`` (t=0) to ``end`` (t=1)."""
    t = min(max(t, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))
