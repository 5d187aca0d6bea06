from __future__ import annotations

from stabcheck.checks import fixers
from stabcheck.checks.base import Check
from stabcheck.flow import const_value
from stabcheck.values import Exp, OnePlusExp, Red


class NaiveSoftmax(Check):
    code = "STB005"
    slug = "naive-softmax"
    summary = "exp(x) / sum(exp(x)) without subtracting the max, or 1 / (1 + exp(-x)): use softmax / sigmoid"

    def on_div(self, node, num, den, num_val, den_val):
        if (
            isinstance(num_val, Exp)
            and not num_val.shifted
            and isinstance(den_val, Red)
            and den_val.kind == "sum"
            and den_val.exp is not None
            and not den_val.exp.shifted
        ):
            self.report(
                node,
                "hand-written softmax without subtracting the max: exp overflows for logits > ~88.7 in float32 "
                "and inf / inf is NaN; use softmax (or subtract x.max() first)",
                self.fix(fixers.naive_softmax, node, num_val, den_val.node, den_val.exp),
            )
        elif isinstance(den_val, OnePlusExp) and const_value(num) == 1.0:
            self.report(
                node,
                "hand-written sigmoid 1 / (1 + exp(-x)): exp(-x) overflows for x < ~-88.7 in float32 and the "
                "gradient becomes inf / inf = NaN; use sigmoid",
                self.fix(fixers.naive_sigmoid, node, den_val.exp),
            )
