"""Positions in a source text: `ast` counts UTF-8 bytes, users count
characters, and edits need offsets."""

from __future__ import annotations

import ast
import re

_NEWLINE = re.compile(r"\r\n|\r|\n")


class SourceMap:
    def __init__(self, source: str):
        self.source = source
        self._starts: list[int] | None = None
        self._lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = _NEWLINE.split(self.source)
        return self._lines

    def _line_starts(self) -> list[int]:
        if self._starts is None:
            starts = [0]
            starts.extend(m.end() for m in _NEWLINE.finditer(self.source))
            self._starts = starts
        return self._starts

    def char_col(self, row: int, byte_col: int) -> int:
        """0-based character column of a UTF-8 byte column on `row` (1-based)."""
        lines = self.lines
        line = lines[row - 1] if 0 < row <= len(lines) else ""
        if line.isascii():
            return byte_col
        return len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    def span(self, node: ast.AST) -> tuple[int, int, int, int]:
        """1-based (row, col, end_row, end_col) of a node, in characters."""
        row = getattr(node, "lineno", 1)
        end_row = getattr(node, "end_lineno", None) or row
        col = self.char_col(row, getattr(node, "col_offset", 0)) + 1
        end_col = self.char_col(end_row, getattr(node, "end_col_offset", None) or 0) + 1
        return row, col, end_row, end_col

    def offsets(self, node: ast.AST) -> tuple[int, int]:
        """Character offsets [start, end) of a node in the source."""
        row, col, end_row, end_col = self.span(node)
        starts = self._line_starts()
        return starts[row - 1] + col - 1, starts[end_row - 1] + end_col - 1

    def text(self, node: ast.AST) -> str:
        start, end = self.offsets(node)
        return self.source[start:end]

    def offset(self, row: int, col0: int) -> int:
        """Character offset of a 1-based row and 0-based character column."""
        starts = self._line_starts()
        return starts[min(max(row, 1), len(starts)) - 1] + col0

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (row, col) of a character offset."""
        starts = self._line_starts()
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - starts[lo] + 1
