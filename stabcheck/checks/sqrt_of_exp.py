from __future__ import annotations

from stabcheck.checks import fixers
from stabcheck.checks.base import Check
from stabcheck.values import Exp


class SqrtOfExp(Check):
    code = "STB006"
    slug = "sqrt-of-exp"
    summary = "sqrt(exp(x)) overflows at half the range of exp(0.5 * x): use exp(0.5 * x)"

    def on_sqrt(self, node, x_node, x_val, qual):
        if isinstance(x_val, Exp) and not x_val.shifted:
            self.report(
                node,
                "sqrt(exp(x)) overflows once x > ~88.7 in float32 although exp(0.5 * x) would not until ~177; "
                "use exp(0.5 * x)",
                self.fix(fixers.exp_half, node, x_val) if x_node is x_val.node else None,
            )
