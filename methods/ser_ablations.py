"""The public SER code's actual behaviour, as ablations of ``+ser`` (spec/ser.md §6).

Its gather carries no gradient, so L_equiv trains nothing: ``+ser_detached`` reproduces that
(same forward and logged value, no gradient), ``+delayed_cls`` keeps only the architecture
and the B2 geometric views.
"""

from __future__ import annotations

from methods.registry import register_addon
from methods.ser import SER


@register_addon("ser_detached")
class SERDetached(SER):
    description = "SER with L_equiv detached, as the public code trains (ablation)"

    def losses(self, method, batch, online, target, progress):
        return {"loss_equiv": self.lam * self.equiv_loss(online, target, batch).detach()}


@register_addon("delayed_cls")
class DelayedCLS(SER):
    description = "SER's delayed [CLS] and B2 geometric views without L_equiv (ablation)"
    uses_hyper = False  # no loss: any base will do

    def taps(self):
        return set()

    def attach(self, method):
        pass  # no projector: nothing would train it

    def losses(self, method, batch, online, target, progress):
        return {}
