"""Where a finding is, for humans and for CI.

`where(d)` is the text form (`path:row:col`, or `nb.ipynb:cell 3:row:col`).
`Physical` maps a notebook finding, reported per cell, to the line and
columns of the .ipynb file itself, so CI annotations land on a line of the
diff. A cell stored as one JSON string maps to that string's line, without
columns; `span` returns None when the cell's source is not found.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from stabcheck.diagnostics import Diagnostic
from stabcheck.filebytes import read_bytes

# What `check -` read, by the name it is reported under: reports read it here, not from disk.
STDIN: dict[str, bytes] = {}

# Control and bidirectional-formatting characters: a file name carrying them
# must not move the cursor, recolour or reorder the terminal's text. Lone
# surrogates: the bytes of a file name that is not UTF-8.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def read_source(path: str) -> bytes:
    return STDIN[path] if path in STDIN else read_bytes(path)


class CheckedCode:
    """The code each file was checked as (a notebook's joined cells), read
    once per report: a SourceMap, and for a notebook its `locate`."""

    def __init__(self):
        self._files: dict[str, tuple | None] = {}

    def get(self, path: str):
        if path not in self._files:
            from stabcheck.engine import decode
            from stabcheck.notebook import parse
            from stabcheck.source import SourceMap

            try:
                data = read_source(path)
                if path.endswith(".ipynb"):
                    nb = parse(data)
                    self._files[path] = (SourceMap(nb.source), nb)
                else:
                    self._files[path] = (SourceMap(decode(data)), None)
            except (OSError, SyntaxError, ValueError, LookupError):  # (UnicodeDecodeError, NotebookError: ValueError)
                self._files[path] = None
        return self._files[path]


def display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return printable(path if rel.startswith("..") else rel)


def repo_relative(path: str) -> str | None:
    """POSIX path relative to the working directory, or None if outside it."""
    try:
        rel = os.path.relpath(os.path.abspath(path))
    except ValueError:
        return None
    return None if rel.startswith("..") else Path(rel).as_posix()


def cell_prefix(d: Diagnostic) -> str:
    return "" if d.cell is None else f"cell {d.cell}:"


def where(d: Diagnostic) -> str:
    return f"{display_path(d.path)}:{cell_prefix(d)}{d.row}:{d.col}"


class Physical:
    """Spans in the file on disk; notebooks are read once each."""

    def __init__(self):
        self._files: dict[str, tuple[list[str], dict[int, int], dict[int, int]]] = {}

    def _notebook(self, path: str) -> tuple[list[str], dict[int, int], dict[int, int]]:
        if path not in self._files:
            from stabcheck.notebook import source_line_numbers, string_source_lines

            try:
                text = read_source(path).decode("utf-8-sig")
            except (OSError, UnicodeDecodeError):
                text = ""
            self._files[path] = (text.split("\n"), source_line_numbers(text), string_source_lines(text))
        return self._files[path]

    def span(self, d: Diagnostic) -> tuple[int, int | None, int, int | None] | None:
        """(row, col, end_row, end_col), 1-based, end column exclusive; the
        columns are None when the cell is one JSON string."""
        if d.cell is None:
            return d.row, d.col, d.end_row, d.end_col
        lines, first, strings = self._notebook(d.path)
        if d.cell in strings:
            return strings[d.cell], None, strings[d.cell], None
        if d.cell not in first:
            return None
        row = first[d.cell] + d.row - 1
        end_row = first[d.cell] + d.end_row - 1
        return row, self._col(lines, row, d.col), end_row, self._col(lines, end_row, d.end_col)

    @staticmethod
    def _col(lines: list[str], row: int, col: int) -> int:
        """Column of a cell-source character in its JSON string literal."""
        if not 0 < row <= len(lines):
            return col
        literal = lines[row - 1]
        indent = len(literal) - len(literal.lstrip())
        try:
            text = json.loads(literal.strip().rstrip(","))
        except ValueError:
            return col
        ascii_only = literal.strip().rstrip(",") == json.dumps(text)
        return indent + 1 + len(json.dumps(text[: col - 1], ensure_ascii=ascii_only)) - 1
