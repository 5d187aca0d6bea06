from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks.base import Check
from stabcheck.values import Red


class SqrtAtZero(Check):
    code = "STB202"
    slug = "sqrt-at-zero"
    summary = "sqrt of a sum of squares with no epsilon: its gradient is inf (then NaN) at 0"

    def on_sqrt(self, node, x_node, x_val, qual):
        if not (isinstance(x_val, Red) and x_val.sumsq and not x_val.guarded):
            return
        if qual is not None and N.framework_of(qual) not in N.AUTODIFF_ROOTS:
            return  # NumPy and friends have no gradients
        self.report(
            node,
            "sqrt of a sum of squares: the forward value is fine at 0 but the gradient 1 / (2 * sqrt(0)) is inf "
            "and becomes NaN; add an epsilon inside the sqrt or clamp it (d2.clamp_min(1e-12).sqrt())",
        )
