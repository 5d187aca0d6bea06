from __future__ import annotations

from stabcheck.checks.base import Check


def _fmt(x: float) -> str:
    return repr(x)


class EpsilonAbsorbed(Check):
    code = "STB203"
    slug = "epsilon-absorbed"
    summary = "an epsilon the dtype rounds away: 1 - 1e-10 == 1 in float32, 1e-8 == 0 in float16"

    def on_absorbed(self, node, exact, rounded):
        self.report(
            node,
            f"this constant is {_fmt(exact)} but rounds to {_fmt(rounded)} in float32: the epsilon guards nothing; "
            "use an epsilon >= 1e-7 next to 1 (float32 spacing below 1 is 6e-8)",
        )

    def on_half_optimizer(self, node, eps):
        self.report(
            node,
            f"Adam-style optimiser over float16 weights with eps={_fmt(eps)}, which is 0 in float16: "
            "updates divide by sqrt(v) + 0; keep float32 master weights (torch.autocast + GradScaler) or use eps >= 1e-4",
        )
