from __future__ import annotations

import ast

from stabcheck.checks import fixers
from stabcheck.checks.base import Check
from stabcheck.flow import const_value
from stabcheck.flow.syntax import exp_operand
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
        elif isinstance(den_val, OnePlusExp) and (const_value(num) == 1.0 or _scaled_sigmoid(num_val, den_val.exp)):
            # `1 / (1 + exp(-x))`, and scaled: `ymin + h / (1 + exp(-k * (x - x0)))`.
            # The forward value is right (1 / inf = 0); only the gradient breaks,
            # so code without gradients (NumPy) is the opt-in tier.
            what = "1" if const_value(num) == 1.0 else "h"
            self.report(
                node,
                f"hand-written sigmoid {what} / (1 + exp(-x)): exp(-x) overflows for x < ~-88.7 in float32 and the "
                "gradient becomes inf / inf = NaN; use sigmoid",
                self.fix(fixers.naive_sigmoid, node, den_val.exp) if what == "1" else None,
                opt_in=not self.facts.differentiable(den_val.exp.qual),
            )


def _scaled_sigmoid(num_val, exp: Exp) -> bool:
    """`h / (1 + exp(-z))`: a numerator that is not itself built from exps,
    over an exp of a negated argument (the sigmoid's own spelling)."""
    operand = exp_operand(exp.node)
    while isinstance(operand, ast.BinOp) and isinstance(operand.op, (ast.Mult, ast.Div)):
        operand = operand.left  # `-k * (t - t0)`: the leading factor carries the sign
    negated = (
        isinstance(operand, ast.UnaryOp) and isinstance(operand.op, ast.USub)
        and not isinstance(operand.operand, ast.Constant)  # `-2 * pi * f`: a constant, not a logit
    )
    return negated and not isinstance(num_val, (Exp, Red))
