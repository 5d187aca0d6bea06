from __future__ import annotations

from stabcheck.checks.base import Check
from stabcheck.values import Red

_WHAT = {"sum": "a sum", "mean": "a mean", "norm": "a norm", "std": "a standard deviation",
         "sqrt": "the square root of a sum", "normprod": "a product of norms"}


class UnguardedDivision(Check):
    code = "STB201"
    slug = "unguarded-division"
    summary = "division by a sum, norm or std that can be zero, with no epsilon"

    def on_div(self, node, num, den, num_val, den_val):
        if not (isinstance(den_val, Red) and den_val.kind in _WHAT) or den_val.guarded or den_val.pos:
            return
        # A sum is flagged in the masked / weighted mean shape `sum(x * m) / sum(m)`
        # (zero for an empty mask); normalising weights or counts by their own
        # sum is too common and rarely all-zero to be worth the noise.
        if den_val.kind in ("sum", "mean") and not isinstance(num_val, Red):
            return
        self.report(
            node,
            f"division by {_WHAT[den_val.kind]} that is 0 for an all-zero (or constant) input: inf/NaN, "
            "and NaN gradients; add an epsilon or clamp the denominator (F.normalize does both)",
        )
