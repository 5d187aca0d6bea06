from __future__ import annotations

from stabcheck.checks import fixers
from stabcheck.checks.base import Check
from stabcheck.flow import strip
from stabcheck.values import Red


class LogSumExp(Check):
    code = "STB003"
    slug = "log-sum-exp"
    summary = "log(sum(exp(x))) overflows once any x > ~88 in float32: use logsumexp"

    def on_log(self, node, x_node, x_val):
        if not (isinstance(x_val, Red) and x_val.kind == "sum" and x_val.exp is not None):
            return
        if x_val.exp.global_max and x_val.per_row:
            # `x - x.max()` then `exp(x).sum(dim=1)`: the whole tensor's max
            # keeps one row's sum >= 1, not the others.
            self.report(
                node,
                "log(sum(exp(x), per row)) after subtracting the max of the whole tensor: a row whose values all "
                "sit more than ~103 below that max (float32) sums to exactly 0 and its log is -inf; subtract each "
                "row's own max (x.max(dim, keepdim=True)) or use logsumexp",
            )
            return
        if not x_val.exp.shifted:
            self.report(
                node,
                "log(sum(exp(x))) is inf once any exp(x) overflows (x > ~88.7 in float32) and -inf once all underflow; "
                "use logsumexp",
                self.fix(fixers.logsumexp, node, x_val.node, x_val.exp) if strip(x_node) is x_val.node else None,
            )

