from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import Check, describe, masked_by, origin
from stabcheck.checks.log_of_softmax import is_direct_softmax
from stabcheck.flow import base_key, const_value
from stabcheck.values import LogOf, Prob


def _fix(prob: Prob) -> str:
    if prob.src == N.SRC_SOFTMAX and not prob.comp:
        return f"use {N.log_softmax_for(prob.qual)} on the logits"
    if prob.src == N.SRC_SIGMOID:
        ls = N.log_sigmoid_for(prob.qual)
        if prob.comp:
            return f"use {ls}(-x) on the logits (log(1 - sigmoid(x)) == logsigmoid(-x)), or a with-logits loss"
        return f"use {ls} on the logits, or a with-logits loss"
    return "clip it to [eps, 1 - eps] first"


class UnguardedLogOfProbability(Check):
    code = "STB002"
    slug = "unguarded-log-of-probability"
    summary = "log(p) or log(1 - p) of a probability with no guard: -inf and NaN gradients at 0 or 1"

    def __init__(self, report, ctx=None, facts=None):
        super().__init__(report, ctx, facts)
        self._fired: set[int] = set()
        # (function, variable) -> the unguarded logs of it already multiplied.
        self._products: dict[tuple[int, str], dict[int, LogOf]] = {}

    def on_log(self, node, x_node, x_val):
        if not isinstance(x_val, Prob) or x_val.lo or is_direct_softmax(x_node, x_val):
            return
        edge = "1" if x_val.comp else "0"
        tested = x_node.right if x_val.comp and isinstance(x_node, ast.BinOp) else x_node
        guard = self.facts.where_guard(tested)
        if guard is not None:
            # `where(p > 0, p * log(p), 0)`: the forward value is masked ...
            line, grads = guard
            if not grads:
                return  # ... and nothing differentiates it (NumPy, no_grad)
            what = f"log of {describe(x_val)}{origin(x_val, node)} guarded by where()"
            why = f"{masked_by(line)} once the probability reaches exactly {edge}"
        else:
            what = f"unguarded log of {describe(x_val)}{origin(x_val, node)}"
            why = f"-inf and a NaN gradient once the probability reaches exactly {edge}"
        self.report(
            node,
            f"{what}: {why}; {_fix(x_val)}",
            self.fix(fixers.log_of_probability, node, x_node, x_val),
        )

    def on_mult(self, node, left, right, lval, rval):
        # The hand-rolled cross-entropy shape, even when `p` is a parameter of
        # unknown origin: `y * log(p)` with a label-like `y`, or the binary
        # pair `... * log(p)` and `... * log(1 - p)` in one function. Entropy
        # (`p * log(p)`), constant factors and density formulas
        # (`alpha * log(rate)`) are not that shape.
        for log_val, other, other_val in ((lval, right, rval), (rval, left, lval)):
            if not isinstance(log_val, LogOf) or id(log_val.node) in self._fired:
                continue
            if const_value(other) is not None or isinstance(other_val, LogOf):
                continue
            other_key = base_key(other)
            if other_key == log_val.key:
                continue
            pair = (log_val.scope, log_val.key)
            seen = self._products.setdefault(pair, {})
            seen[id(log_val.node)] = log_val
            if N.is_label_name(other_key):
                self._fire(log_val)
            if len({v.comp for v in seen.values()}) == 2:
                for pending in seen.values():
                    self._fire(pending)

    def _fire(self, log_val: LogOf) -> None:
        if id(log_val.node) in self._fired:
            return
        self._fired.add(id(log_val.node))
        p = log_val.key
        what = f"1 - {p}" if log_val.comp else p
        edge = "1" if log_val.comp else "0"
        self.report(
            log_val.node,
            f"hand-rolled cross-entropy takes an unguarded log({what}): -inf and a NaN gradient once "
            f"`{p}` reaches exactly {edge}; clip `{p}` to [eps, 1 - eps] or use a with-logits loss",
        )
