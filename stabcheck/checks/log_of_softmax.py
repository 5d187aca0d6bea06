from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks import fixers
from stabcheck.checks.base import Check
from stabcheck.flow import strip
from stabcheck.values import Prob


def is_direct_softmax(x_node, x_val) -> bool:
    """`log(softmax(x))` nested in one expression (STB001's territory)."""
    return (
        isinstance(x_val, Prob)
        and x_val.src == N.SRC_SOFTMAX
        and not x_val.comp
        and not x_val.lo
        and x_val.node is strip(x_node)
    )


class LogOfSoftmax(Check):
    code = "STB001"
    slug = "log-of-softmax"
    summary = "log(softmax(x)) is -inf once a probability underflows: use log_softmax"

    def on_log(self, node, x_node, x_val):
        if is_direct_softmax(x_node, x_val):
            fix = N.log_softmax_for(x_val.qual) if x_val.qual else "the tensor method .log_softmax(dim)"
            self.report(
                node,
                f"log of softmax is -inf once a class probability underflows to 0; use {fix}",
                self.fix(fixers.log_softmax, node, x_val.node, x_val.qual),
            )
