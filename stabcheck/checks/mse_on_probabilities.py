from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks.base import Check, describe, origin, short
from stabcheck.values import Diff, Prob

# Sigmoid outputs are left alone: regressing [0, 1] targets such as pixels
# through a sigmoid is legitimate.
_SOURCES = (N.SRC_SOFTMAX, N.SRC_PROBA)


def _class_prob(val) -> bool:
    return isinstance(val, Prob) and val.src in _SOURCES and not val.comp


def _one_sided(a, b):
    """The probability when exactly one operand is one; comparing two
    distributions (consistency / distillation losses) is deliberate."""
    if _class_prob(a) and not isinstance(b, Prob):
        return a
    if _class_prob(b) and not isinstance(a, Prob):
        return b
    return None


class MseOnProbabilities(Check):
    code = "STB104"
    slug = "mse-on-probabilities"
    summary = "mean squared error on softmax outputs: gradients vanish as they saturate; use cross-entropy on logits"

    def _flag(self, node, prob, what):
        self.report(
            node,
            f"{what} on {describe(prob)}{origin(prob, node)}: its gradient vanishes as the softmax saturates; "
            "use cross-entropy on the logits",
        )

    def on_loss(self, node, spec, family, qual, pairs):
        if family != N.MSE:
            return
        vals = [v for _, v in pairs]
        prob = _one_sided(*vals) if len(vals) == 2 else (vals[0] if vals and _class_prob(vals[0]) else None)
        if prob is not None:
            self._flag(node, prob, f"`{short(qual)}`")

    def on_square(self, node, base, base_val):
        if isinstance(base_val, Diff):
            prob = _one_sided(base_val.left, base_val.right)
            if prob is not None:
                self._flag(node, prob, "squared error")
