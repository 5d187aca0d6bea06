"""What every check shares: identity, prefilter words, and `report`."""

from __future__ import annotations

import ast
from typing import Callable

from stabcheck.values import Prob

# A reported finding before positions are turned into rows and columns.
Report = Callable[[str, ast.AST, str], None]


class Check:
    code: str = ""
    slug: str = ""
    summary: str = ""  # one line, for `stabcheck rules`

    def __init__(self, report: Report):
        self._report = report

    def report(self, node: ast.AST, message: str) -> None:
        self._report(self.code, node, message)


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


def describe(prob: Prob) -> str:
    """`a softmax output`, `1 - a sigmoid output`."""
    what = f"a {prob.src} output"
    return f"1 - {what}" if prob.comp else what


def short(qual: str | None) -> str:
    return qual.rsplit(".", 1)[-1] if qual else "the loss"
