from __future__ import annotations

from stabcheck.checks.base import Check, masked_by
from stabcheck.values import Red, Sq


class SqrtAtZero(Check):
    code = "STB202"
    slug = "sqrt-at-zero"
    summary = "sqrt of a squared distance with no epsilon: its gradient is inf (then NaN) where the distance is 0"

    def on_sqrt(self, node, x_node, x_val, qual):
        if isinstance(x_val, Sq):  # `sqrt((a - b) ** 2)`: a square with no sum is the same hazard
            x_val = Red("sum", x_val.node, sumsq=True, dist=x_val.diff)
        if not (isinstance(x_val, Red) and x_val.sumsq and not x_val.guarded):
            return
        if not self.facts.differentiable(qual):
            return  # NumPy, no_grad, .item(), stop_gradient: no gradient to break
        line = self.facts.masked(x_node)
        if line is not None:
            self.report(
                node,
                f"sqrt of a sum of squares guarded by where(): {masked_by(line)} (1 / (2 * sqrt(0)) is inf); "
                "guard the operand as well (the 'double where': sqrt(where(d2 > 0, d2, 1))) or clamp it "
                "(d2.clamp_min(1e-12).sqrt())",
            )
            return
        if x_val.dist:
            self.report(
                node,
                "sqrt of a squared distance: it is exactly 0 wherever the two points coincide (the diagonal of a "
                "pairwise-distance matrix always is), and there the gradient 1 / (2 * sqrt(0)) is inf and becomes "
                "NaN; add an epsilon inside the sqrt (sqrt(d2 + 1e-12)) or clamp it (d2.clamp_min(1e-12).sqrt())",
            )
            return
        # The norm or RMS of one value: 0 only for an all-zero vector, which
        # learned features and weights do not meet (opt-in).
        self.report(
            node,
            "sqrt of a sum of squares: the forward value is fine at 0 but the gradient 1 / (2 * sqrt(0)) is inf "
            "and becomes NaN for an all-zero input; add an epsilon inside the sqrt or clamp it "
            "(d2.clamp_min(1e-12).sqrt())",
            opt_in=True,
        )
