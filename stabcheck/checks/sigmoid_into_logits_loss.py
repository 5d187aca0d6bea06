from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import Check, origin, short
from stabcheck.values import Prob


class SigmoidIntoLogitsLoss(Check):
    code = "STB103"
    slug = "sigmoid-into-logits-loss"
    summary = "sigmoid output passed to a loss that applies its own sigmoid: pass the logits"

    def on_loss(self, node, spec, family, qual, pairs):
        if family != N.SIGMOID_LOGITS:
            return
        for arg, val in pairs:
            if isinstance(val, Prob) and val.src == N.SRC_SIGMOID and not val.comp:
                self.report(
                    arg,
                    f"`{short(qual)}` applies a sigmoid itself but receives a sigmoid output{origin(val, arg)}: "
                    "sigmoid(sigmoid(z)) stays in [0.5, 0.73] and cannot fit the labels; pass the logits",
                    self.fix(fixers.drop_activation, arg, val.node, val.qual, "sigmoid"),
                )
