from __future__ import annotations

from stabcheck.checks.base import Check, line_of, masked_by
from stabcheck.values import Raw


class LogOfUnconstrained(Check):
    code = "STB007"
    slug = "log-of-unconstrained"
    summary = "log or sqrt of a raw linear/conv layer output, which can be negative or zero"

    def _flag(self, node, x_node, x_val, what):
        at = line_of(x_val.node)
        what = f"{what} of a raw linear-layer output" + (f" (line {at})" if at is not None and at != line_of(node) else "")
        guard = self.facts.where_guard(x_node)
        if guard is None:
            why = ": it can be negative or 0, giving NaN or -inf"
        elif guard[1]:
            why = f", guarded by where(): {masked_by(guard[0])}"
        else:
            return  # `np.where(x > 0, np.log(x), 0)`: masked, and nothing differentiates it
        self.report(node, f"{what}{why}; predict a log-value and exp it, or apply softplus(x) + eps first")

    def on_log(self, node, x_node, x_val):
        if isinstance(x_val, Raw):
            self._flag(node, x_node, x_val, "log")

    def on_sqrt(self, node, x_node, x_val, qual):
        if isinstance(x_val, Raw):
            self._flag(node, x_node, x_val, "sqrt")
