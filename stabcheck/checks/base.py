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


def origin(prob: Prob, at: ast.AST) -> str:
    """` (softmax at line 12)` when the probability was made on another line."""
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
