from __future__ import annotations

from stabcheck.checks.base import Check
from stabcheck.values import Cosine


class AcosOfCosine(Check):
    code = "STB204"
    slug = "acos-of-cosine"
    summary = "acos/asin of a cosine similarity without clamping: NaN past +-1, infinite slope at +-1"

    def on_acos(self, node, x_node, x_val):
        if isinstance(x_val, Cosine) and not x_val.guarded:
            self.report(
                node,
                "acos of a cosine similarity: rounding puts it past +-1 (NaN) and the derivative is infinite at "
                "+-1; clamp it to [-1 + 1e-7, 1 - 1e-7] first",
            )
