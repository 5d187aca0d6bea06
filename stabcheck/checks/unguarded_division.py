from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.checks.base import Check, masked_by
from stabcheck.flow import const_value
from stabcheck.values import Delta, Exp, Raw, Red, Sq

_WHAT = {"sum": "a sum", "mean": "a mean", "norm": "a norm", "std": "a standard deviation",
         "sqrt": "the square root of a sum", "normprod": "a product of norms",
         "maxabs": "a maximum of absolute values or norms"}


class UnguardedDivision(Check):
    code = "STB201"
    slug = "unguarded-division"
    summary = "division by a standard deviation or a sum of exps that can be zero, with no epsilon"

    def on_div(self, node, num, den, num_val, den_val):
        # `where(d > 0, n / d, 0)` keeps the forward value finite, not the
        # gradient (1 / d is inf, times the discarded branch's 0 is NaN); the
        # guard itself says d == 0 happens, so even an opt-in shape is reported.
        masked = self.facts.masked(den)
        if masked is not None and _count(den_val) and (_count(num_val) or const_value(num) is not None):
            masked = None  # `where(area_u > 0, area_i / area_u, 1.0)`: counts of a comparison carry no gradient
        if masked is None and self.facts.nonzero(den):
            return
        grad = self.facts.differentiable()

        def say(what: str, hazard: str, fix: str, opt_in: bool = False) -> None:
            why = f"guarded by where(): {masked_by(masked)}" if masked else hazard
            self.report(node, f"{what} {why}; {fix}", opt_in=opt_in and not masked)

        if isinstance(den_val, (Raw, Sq)) and (isinstance(den_val, Raw) or den_val.raw):
            # `(x - mu) ** 2 / (2 * sd ** 2)` with `sd = self.fc_sd(h)`: nothing keeps a raw output from 0.
            say("division by a raw layer output (or its square) used as a scale,",
                "nothing keeps it away from 0, so the loss becomes inf/NaN as soon as the layer outputs 0",
                "predict log(sd) and use exp, or softplus + eps")
            return
        if not isinstance(den_val, Red) or den_val.guarded:
            return
        if den_val.exp is not None and not den_val.exp.maxshift and not isinstance(num_val, Exp):
            # A density (a sum or mixture of exps): each exp underflows to 0
            # far from its mode, so the sum does. `x / x.sum()` of the exps
            # themselves is a softmax (STB005's business), not this.
            say("division by a sum of exps (a density or normaliser)",
                "that underflows to exactly 0 once every exponent is below ~-103 in float32 (~-17 in float16): "
                "inf/NaN" + (", and NaN gradients" if grad else ""),
                "work in log space (logsumexp) or add an epsilon to the denominator")
            return
        if den_val.kind not in _WHAT or den_val.pos:
            return
        if den_val.kind == N.STD and _centred(num, num_val):
            # `(x - x.mean()) / x.std()`: advantages, rewards, features of a batch.
            say("standardising by a standard deviation",
                "with no epsilon: it is 0 for a constant batch (equal rewards, a padded or single-element batch; "
                "an unbiased std of one element is NaN), and 0 / 0 is NaN" + (", in the gradients too" if grad else ""),
                "divide by (std + 1e-8)")
            return
        # Normalising learned features by their norm, masked or weighted means,
        # a vector by its own sum: the denominator is 0 only for an all-zero
        # input, which healthy code rarely meets (opt-in; see the rule's page).
        if den_val.kind in ("sum", "mean") and not isinstance(num_val, Red):
            return
        say(f"division by {_WHAT[den_val.kind]}",
            "that is 0 for an all-zero (or constant) input: inf/NaN" + (", and NaN gradients" if grad else ""),
            "add an epsilon or clamp the denominator (F.normalize does both)", opt_in=True)


def _count(val) -> bool:
    """`(x > t).sum()`, `torch.sum(x > t, dim=-1)`: a count of a comparison, which no gradient reaches."""
    if not isinstance(val, Red) or val.kind != N.SUM or not isinstance(val.node, ast.Call):
        return False
    call = val.node
    operands = [call.func.value] if isinstance(call.func, ast.Attribute) else []
    for operand in operands + call.args[:1]:
        while isinstance(operand, ast.Call) and isinstance(operand.func, ast.Attribute) \
                and operand.func.attr in N.PASSTHROUGH_METHODS:
            operand = operand.func.value
        if isinstance(operand, ast.Compare) or isinstance(operand, ast.UnaryOp) and isinstance(operand.op, ast.Invert):
            return True
    return False


def _centred(num: ast.AST, num_val) -> bool:
    """`x - mean` (any subtraction of two values): a standardisation's numerator."""
    return isinstance(num_val, Delta) or isinstance(num, ast.BinOp) and isinstance(num.op, ast.Sub)
