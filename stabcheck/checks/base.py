"""What every check shares: identity, `report`, and the fix context."""

from __future__ import annotations

import ast
from typing import Callable

from stabcheck.fixes import Fix, FixContext
from stabcheck.flow.facts import Context
from stabcheck.values import Prob

# A reported finding before positions are turned into rows and columns:
# (code, node, message, fix, opt_in).
Report = Callable[[str, ast.AST, str, "Fix | None", bool], None]


class Check:
    code: str = ""
    slug: str = ""
    summary: str = ""  # one line, for `stabcheck rules`

    def __init__(self, report: Report, ctx: FixContext | None = None, facts: Context | None = None):
        self._report = report
        self.ctx = ctx  # None: fixes are not wanted (or not possible)
        self.facts = facts if facts is not None else Context()  # where the walk is (flow/facts.py)

    def report(self, node: ast.AST, message: str, fix: Fix | None = None, opt_in: bool = False) -> None:
        """`opt_in`: a shape of the rule too often harmless on real code to be
        in the default selection; reported when the rule is selected by its
        code, a prefix or ALL (the rule's page says which shapes)."""
        self._report(self.code, node, message, fix, opt_in)

    def fix(self, builder, *args) -> Fix | None:
        """Run a fix builder; a fix that cannot be written safely is None."""
        if self.ctx is None:
            return None
        try:
            return builder(self.ctx, *args)
        except (IndexError, KeyError, AttributeError, ValueError):
            return None


class ActivationIntoLoss(Check):
    """A probability of source `src` passed as the prediction of a loss of
    `family`. Subclasses say why (`message`) and how to fix it (`make_fix`)."""

    family: str = ""
    src: str = ""

    def on_loss(self, node, spec, family, qual, pairs):
        if family != self.family:
            return
        for arg, val in pairs:
            if isinstance(val, Prob) and val.src == self.src and not val.comp and self.applies(qual, val):
                self.report(arg, self.message(short(qual), origin(val, arg), qual), self.make_fix(node, qual, arg, val))

    def applies(self, qual: str, val: Prob) -> bool:
        return True

    def message(self, loss: str, where: str, qual: str) -> str:
        raise NotImplementedError

    def make_fix(self, node, qual, arg, val) -> Fix | None:
        return None


def line_of(node: ast.AST | None) -> int | None:
    return getattr(node, "lineno", None)


_LIBRARIES = frozenset({"torch", "tensorflow", "keras", "jax", "numpy", "scipy", "optax", "sklearn", "cupy"})


def origin(prob, at: ast.AST) -> str:
    """Where the probability was made: ` (returned by mypkg.model.Net)` for
    another module of the project, ` (made at line 12)` for another line."""
    qual = getattr(prob, "qual", None)
    if qual and qual.split(".", 1)[0] not in _LIBRARIES:
        return f" (returned by {qual})"
    line = line_of(prob.node)
    if line is None or line == line_of(at):
        return ""
    return f" (made at line {line})"


def masked_by(line: int) -> str:
    """The clause for a hazard that a `where` (at `line`) hides from the forward pass only."""
    return (f"the where() at line {line} guards the forward value only: autodiff still differentiates the "
            "discarded branch, and its gradient there is 0 * inf = NaN")


def describe(prob: Prob) -> str:
    """`a softmax output`, `1 - a sigmoid output`."""
    what = f"a {prob.src} output"
    return f"1 - {what}" if prob.comp else what


def short(qual: str | None) -> str:
    return qual.rsplit(".", 1)[-1] if qual else "the loss"
