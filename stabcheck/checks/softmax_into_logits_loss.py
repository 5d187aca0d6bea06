from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import ActivationIntoLoss


class SoftmaxIntoLogitsLoss(ActivationIntoLoss):
    code = "STB101"
    slug = "softmax-into-logits-loss"
    summary = "softmax output passed to a loss that applies its own softmax: pass the logits"
    family = N.SOFTMAX_LOGITS
    src = N.SRC_SOFTMAX

    def message(self, loss, where, qual):
        return (
            f"`{loss}` applies log_softmax itself but receives a softmax output{where}; "
            "the double softmax flattens the gradients: pass the logits"
        )

    def make_fix(self, node, qual, arg, val):
        return self.fix(fixers.drop_activation, arg, val.node, val.qual, "softmax")
