from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import Check, origin, short
from stabcheck.values import Prob


class SigmoidIntoBce(Check):
    code = "STB102"
    slug = "sigmoid-into-bce"
    summary = "binary cross-entropy on a sigmoid output: use the with-logits form"

    def on_loss(self, node, spec, family, qual, pairs):
        if family != N.BCE_PROBS:
            return
        for arg, val in pairs:
            if not (isinstance(val, Prob) and val.src == N.SRC_SIGMOID and not val.comp):
                continue
            if qual.startswith("keras.") and (val.qual or "").startswith(N.KERAS_CACHED_LOGITS):
                continue
            self.report(
                arg,
                f"`{short(qual)}` on a sigmoid output{origin(val, arg)}: sigmoid saturates to exactly 0 or 1 "
                f"in float32 (1.0 already for x > ~16.6) and the loss hits log(0); "
                f"use {N.logits_loss_for(family, qual)} on the logits",
                self.fix(fixers.bce_with_logits, node, qual, arg, val.node, val.qual),
            )
