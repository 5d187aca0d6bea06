from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import ActivationIntoLoss


class SigmoidIntoLogitsLoss(ActivationIntoLoss):
    code = "STB103"
    slug = "sigmoid-into-logits-loss"
    summary = "sigmoid output passed to a loss that applies its own sigmoid: pass the logits"
    family = N.SIGMOID_LOGITS
    src = N.SRC_SIGMOID

    def message(self, loss, where, qual):
        return (
            f"`{loss}` applies a sigmoid itself but receives a sigmoid output{where}: "
            "sigmoid(sigmoid(z)) stays in [0.5, 0.73] and cannot fit the labels; pass the logits"
        )

    def make_fix(self, node, qual, arg, val):
        return self.fix(fixers.drop_activation, arg, val.node, val.qual, "sigmoid")
