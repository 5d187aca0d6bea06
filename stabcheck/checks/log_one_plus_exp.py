from __future__ import annotations

from stabcheck.checks import fixers
from stabcheck.checks.base import Check
from stabcheck.flow.syntax import exp_operand
from stabcheck.values import Exp, OnePlusExp


class LogOnePlusExp(Check):
    code = "STB004"
    slug = "log-one-plus-exp"
    summary = "log(1 + exp(x)) overflows for x > ~88 in float32: use softplus"

    def on_log(self, node, x_node, x_val):
        if isinstance(x_val, OnePlusExp) and not x_val.exp.shifted and not self._bounded(x_val.exp):
            self._flag(node, "log(1 + exp(x))", self.fix(fixers.softplus, node, x_node, x_val.exp))

    def on_log1p(self, node, x_node, x_val):
        if isinstance(x_val, Exp) and not x_val.shifted and not self._bounded(x_val):
            fix = self.fix(fixers.softplus, node, x_node, x_val) if x_node is x_val.node else None
            self._flag(node, "log1p(exp(x))", fix)

    def _bounded(self, exp: Exp) -> bool:
        """`where(x < 20, log1p(exp(x)), x)`: the branch is taken only where x is small."""
        operand = exp_operand(exp.node)
        return operand is not None and self.facts.bounded(operand)

    def _flag(self, node, what, fix):
        self.report(
            node,
            f"{what} is inf once exp(x) overflows (x > ~88.7 in float32), and its gradient NaN; "
            "use softplus(x) (or logaddexp(0, x))",
            fix,
        )
