from __future__ import annotations

from stabcheck.checks.base import Check
from stabcheck.values import Cosine


class AcosOfCosine(Check):
    code = "STB204"
    slug = "acos-of-cosine"
    summary = "acos/asin of a cosine similarity without clamping: NaN past +-1, infinite slope at +-1"

    def on_acos(self, node, x_node, x_val):
        if not isinstance(x_val, Cosine) or x_val.guarded:
            return
        if x_val.clamped:
            # Decided: a clamp to exactly [-1, 1] is reported where gradients flow.
            self.report(
                node,
                "acos of a cosine similarity clamped to exactly [-1, 1]: the value is defined, but the derivative "
                "-1 / sqrt(1 - c**2) is infinite at the ends, which the clamp reaches; clamp it to "
                "[-1 + 1e-7, 1 - 1e-7] instead",
            )
        else:
            self.report(
                node,
                "acos of a cosine similarity: rounding puts it past +-1 (NaN) and the derivative is infinite at "
                "+-1; clamp it to [-1 + 1e-7, 1 - 1e-7] first",
            )
