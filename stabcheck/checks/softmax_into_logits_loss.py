from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import Check, origin, short
from stabcheck.values import Prob


class SoftmaxIntoLogitsLoss(Check):
    code = "STB101"
    slug = "softmax-into-logits-loss"
    summary = "softmax output passed to a loss that applies its own softmax: pass the logits"

    def on_loss(self, node, spec, family, qual, pairs):
        if family != N.SOFTMAX_LOGITS:
            return
        for arg, val in pairs:
            if isinstance(val, Prob) and val.src == N.SRC_SOFTMAX and not val.comp:
                self.report(
                    arg,
                    f"`{short(qual)}` applies log_softmax itself but receives a softmax output{origin(val, arg)}; "
                    "the double softmax flattens the gradients: pass the logits",
                    self.fix(fixers.drop_activation, arg, val.node, val.qual, "softmax"),
                )
