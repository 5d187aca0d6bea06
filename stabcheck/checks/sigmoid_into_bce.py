from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import ActivationIntoLoss


class SigmoidIntoBce(ActivationIntoLoss):
    code = "STB102"
    slug = "sigmoid-into-bce"
    summary = "binary cross-entropy on a sigmoid output: use the with-logits form"
    family = N.BCE_PROBS
    src = N.SRC_SIGMOID

    def applies(self, qual, val):
        # Keras activations cache their logits and Keras losses use them.
        return not (qual.startswith("keras.") and (val.qual or "").startswith(N.KERAS_CACHED_LOGITS))

    def message(self, loss, where, qual):
        return (
            f"`{loss}` on a sigmoid output{where}: sigmoid saturates to exactly 0 or 1 in float32 "
            f"(1.0 already for x > ~16.6) and the loss hits log(0); "
            f"use {N.bce_with_logits_for(qual)} on the logits"
        )

    def make_fix(self, node, qual, arg, val):
        return self.fix(fixers.bce_with_logits, node, qual, arg, val.node, val.qual)
